"""Vectorised samplers of the distillation methods, with checkpointed random state."""
