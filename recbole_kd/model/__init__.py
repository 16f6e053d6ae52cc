"""recbole_kd's distillation models, one method per file."""
