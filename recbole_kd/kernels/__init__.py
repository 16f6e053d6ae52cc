"""Speed-ups with tests of their own: list scores, the row sort, fused Adam, the heap setting, subnormals
flushed to zero."""
