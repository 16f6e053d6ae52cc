"""Tools around training: comparisons and their reports, rank comparison, data converters."""
