"""The one place where every trainer the package uses is chosen and built."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from recbole.trainer import Trainer
from recbole.utils import get_local_time
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_kd import checkpoint, distributed
from recbole_kd.eval_protocol import FixedSampledEvaluation, attach_candidates, uses_candidates
from recbole_kd.kernels import heap
from recbole_kd.kernels.denormals import FlushDenormals
from recbole_kd.kernels.fused_optimizer import FusedOptimizer
from recbole_kd.model.base import KnowledgeDistillationModel
from recbole_kd.trainer.bd_trainer import BDTrainer
from recbole_kd.trainer.distributed_training import DistributedTraining
from recbole_kd.trainer.kd_trainer import KDTrainer
from recbole_kd.trainer.mixins import ClosesTensorBoard, EpochTimer, with_mixin
from recbole_kd.trainer.resumable import ResumableTrainer


def get_trainer(model_type, model_class: type) -> type:
    """The trainer of ``model_class``: recbole_kd's for its models; for a RecBole model that
    RecBole trains with its plain Trainer, the same with resume points; else RecBole's own."""
    if issubclass(model_class, KnowledgeDistillationModel):
        return BDTrainer if model_class.teacher_trainable else KDTrainer
    trainer = recbole_get_trainer(model_type, model_class.__name__)
    return ResumableTrainer if trainer is Trainer else trainer


def create_trainer(config, model, loaders: Sequence, model_config=None, timed: bool = False):
    """The trainer of ``model``, with what the run's settings ask for:

    - evaluation under the run's protocol (``kd_eval_protocol``), its candidates attached;
    - fused Adam and AdamW (``kd_fused_optimizer``);
    - on a CPU, subnormal floats flushed to zero while fitting (``kd_flush_denormal``) and glibc
      keeping freed memory (``kd_keep_freed_memory``, process-wide, applied once here): CPU
      settings, which a run on a GPU leaves alone;
    - with ``timed``, the wall time of every training epoch in ``trainer.epoch_seconds``;
    - in a distributed run, DDP, exact metrics over ranks and files written by rank 0;
    - a checkpoint name no other run shares;
    - its TensorBoard writer closed when ``fit`` ends.

    ``model_config`` is the config the trainer trains with (a derived teacher config, say);
    ``config`` is the run's, which decides the protocol and its candidates.
    """
    model_config = model_config or config
    on_cpu = torch.device(model_config["device"]).type == "cpu"
    if config["kd_keep_freed_memory"] and on_cpu:
        heap.keep_freed_memory()
    trainer_class = get_trainer(model_config["MODEL_TYPE"], type(model))
    trainer_class = with_mixin(ClosesTensorBoard, trainer_class)
    if uses_candidates(config):
        trainer_class = with_mixin(FixedSampledEvaluation, trainer_class)
    if config["kd_flush_denormal"] and on_cpu:
        trainer_class = with_mixin(FlushDenormals, trainer_class)
    if config["kd_fused_optimizer"]:
        trainer_class = with_mixin(FusedOptimizer, trainer_class)
    if timed:
        trainer_class = with_mixin(EpochTimer, trainer_class)
    if distributed.is_distributed():  # in front: its DDPs wrap the model the others built
        trainer_class = with_mixin(DistributedTraining, trainer_class)
    trainer = trainer_class(model_config, model)
    trainer.saved_model_file = distributed.broadcast_object(checkpoint.run_file(
        model_config["checkpoint_dir"], model_config["model"], get_local_time()))
    attach_candidates(trainer, config, loaders)
    return trainer
