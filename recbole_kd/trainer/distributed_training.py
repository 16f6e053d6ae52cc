"""DistributedTraining: the trainer mixin of runs over several processes.

RecBole's own distributed path wraps the model in a DDP for CUDA devices only and averages
metrics that each rank has already rounded, over shards padded with repeated users. This mixin
builds the DDPs for the backend in use (``device_ids`` on CUDA only), synchronises only trainable
parameters, reduces metrics exactly and lets rank 0 alone write files.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import torch
from recbole.evaluator import Evaluator
from recbole.evaluator.base_metric import TopkMetric
from torch.nn.parallel import DistributedDataParallel

from recbole_kd import checkpoint, distributed
from recbole_kd.errors import KDConfigError
from recbole_kd.trainer.resumable import extra_states


class ReducingEvaluator(Evaluator):
    """RecBole's evaluator over every rank's users: each top-k metric's per-user values are
    summed and counted over ranks at full precision and divided once, so the figures are those
    of one process evaluating all users."""

    def __init__(self, config):
        super().__init__(config)
        for name, metric in self.metric_class.items():
            if not isinstance(metric, TopkMetric):
                raise KDConfigError(
                    f"metrics: '{name}' cannot be reduced over ranks; distributed runs evaluate "
                    "top-k metrics (Recall, MRR, NDCG, Hit, Precision, MAP).")
            metric.topk_result = partial(reduced_topk_result, metric)


def reduced_topk_result(metric: TopkMetric, name: str, value: np.ndarray) -> dict:
    """``TopkMetric.topk_result`` with the mean taken over the users of every rank."""
    sums = torch.from_numpy(np.asarray(value, dtype=np.float64).sum(axis=0))
    totals = distributed.all_reduce_sum(
        torch.cat([sums, torch.tensor([len(value)], dtype=torch.float64)]))
    mean = (totals[:-1] / totals[-1]).numpy()
    return {f"{name}@{k}": round(mean[k - 1], metric.decimal_place) for k in metric.topk}


class DistributedTraining:
    """Trainer mixin for a rank of a distributed run (see :mod:`recbole_kd.distributed`)."""

    def __init__(self, config, model):
        with distributed.single_process_view(config):  # no CUDA-only DDP from RecBole
            super().__init__(config, model)
        device_ids = [self.device] if self.device.type == "cuda" else None
        modules = getattr(self, "synchronised_modules", lambda: [self.model])()
        for module in modules:  # a frozen teacher stays outside DDP
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                module, getattr(module, "frozen_teacher_names", list)())
        # One DDP per module stepped on its own (BD's two models); built now, so every rank
        # starts from rank 0's weights. Buffers are not re-broadcast at every step.
        self.ddps = {id(module): DistributedDataParallel(module, device_ids=device_ids,
                                                         broadcast_buffers=False)
                     for module in modules}
        self.distributed_model = self.ddps[id(modules[0])]
        self.evaluator = ReducingEvaluator(config)

    def gradient_sync(self, module: torch.nn.Module) -> torch.Tensor:
        """Arm ``module``'s DDP to all-reduce the gradients of the next backward; returns a zero
        term to add to the loss, through which every trainable parameter takes part."""
        ddp = self.ddps[id(module)]
        module.forward = lambda x: x  # DDP's forward prepares the reducer; nothing is computed
        try:
            ddp(torch.zeros(1, device=self.device))
        finally:
            del module.forward
        return sum(p.sum() * 0 for p in module.parameters() if p.requires_grad)

    def set_reduce_hook(self):  # RecBole's hook for its own training loop
        self._sync_term = self.gradient_sync(self.model)

    def sync_grad_loss(self):
        return self._sync_term

    def _map_reduce(self, result, num_sample):
        return result  # already reduced exactly by ReducingEvaluator

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if distributed.is_main():
            # RecBole's trainers save their own config: a single process's, to load anywhere.
            config, self.config = self.config, distributed.single_process_config(self.config)
            try:
                super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
            finally:
                self.config = config
        distributed.barrier()

    def _save_resume_point(self, epoch: int) -> None:
        # Each rank keeps the samplers' states of its own users in a file of its own; rank 0's
        # resume point holds every rank's random streams and names the epoch of those files.
        # Files of the previous epoch go once the new resume point is on disk: a kill at any
        # moment leaves a resume point whose rank files exist.
        rank_file = checkpoint.rank_file(self.resume_file, distributed.rank(), epoch)
        checkpoint.atomic_save({"epoch": epoch, "extra_state": extra_states(self.model)},
                               rank_file)
        by_rank = {"rng": distributed.all_gather_object(self.rng_state())}  # after every save
        if distributed.is_main():
            super()._save_resume_point(epoch, by_rank=by_rank)
        distributed.barrier()
        for old in checkpoint.rank_files(self.resume_file, distributed.rank()):
            if old != rank_file:
                os.remove(old)
