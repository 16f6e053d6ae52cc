"""Trainers of the distillation models, and the factory that builds every trainer."""

from recbole_kd.trainer.bd_trainer import BDTrainer
from recbole_kd.trainer.kd_trainer import KDTrainer

__all__ = ["BDTrainer", "KDTrainer"]
