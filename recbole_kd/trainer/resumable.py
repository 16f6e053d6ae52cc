"""ResumableTrainer: RecBole's Trainer whose runs continue exactly after any interruption.

Every epoch it writes a resume point (``…-last.pth``) beside the best-model checkpoint: the
weights, the optimizer, the early-stopping state and every random state, so that a run resumed
from it ends exactly as the uninterrupted one. Files are written atomically.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_kd import checkpoint, distributed
from recbole_kd.errors import CheckpointError


def is_extra_state(key: str) -> bool:
    """Whether ``key`` of a model's state_dict holds a sampler's state: what may differ between
    ranks (the weights never do)."""
    return key.endswith("_extra_state")


def extra_states(model: torch.nn.Module) -> dict:
    """The samplers' states in ``model``'s state_dict."""
    return {k: v for k, v in model.state_dict().items() if is_extra_state(k)}


def rank_state(saved: dict, path: str) -> tuple[dict, dict]:
    """(random states, sampler states) of this rank in a resume point, refused when it was
    written by a run with another number of processes (its random streams would not continue).
    A distributed run's sampler states are in each rank's file beside the resume point."""
    by_rank = saved.get("by_rank") or {"rng": [saved["rng"]]}
    if len(by_rank["rng"]) != distributed.world_size():
        raise CheckpointError(
            f"kd_resume '{path}' was written by a run of {len(by_rank['rng'])} process(es); this "
            f"run has {distributed.world_size()}: resume it with the same number of processes.")
    rng = by_rank["rng"][distributed.rank()]
    if "by_rank" not in saved:
        return rng, {}
    shard = checkpoint.rank_file(path, distributed.rank(), saved["epoch"])
    if not os.path.isfile(shard):
        raise CheckpointError(
            f"kd_resume '{path}' needs the sampler state of rank {distributed.rank()}, "
            f"'{shard}', which is missing: keep the resume point's .rank<r>.epoch<e>.pth files "
            "beside it.")
    return rng, torch.load(shard, map_location="cpu", weights_only=False)["extra_state"]


def check_same_teacher(saved: dict, model, path: str) -> None:
    """Refuse a resume point of a run that distilled another teacher: a released teacher is
    not in the resume point, the run's teacher checkpoint (or cached teacher) gives it again."""
    wanted = saved.get("teacher_fingerprint")
    if wanted is not None and wanted != getattr(model, "teacher_fingerprint", None):
        raise CheckpointError(
            f"kd_resume '{path}' continues a run that distilled another teacher than this "
            "command's (their weights differ): set teacher_checkpoint to that run's teacher, or "
            "unset kd_resume to start a new run.")


class ResumableTrainer(Trainer):
    """RecBole's Trainer with atomic checkpoints and a resume point after every epoch."""

    optimizer_role = "model"  # the name of the optimizer's state in resume points

    _train_data = None  # the loader being trained on, whose shuffling state checkpoints keep
    _pending_rng: dict | None = None  # random states read by resume_checkpoint, set by fit

    def rng_state(self) -> dict:
        """Every random state training draws from: torch (Gumbel noise, dropout), numpy
        (RecBole's negative sampling), Python, and the train loader's shuffling generator."""
        state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                 "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self._train_data is not None:
            state["loader"] = self._train_data.generator.get_state()
        return state

    def _restore_rng(self, train_data) -> None:
        self._train_data = train_data
        state, self._pending_rng = self._pending_rng, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        if "loader" in state:
            train_data.generator.set_state(state["loader"])

    @property
    def resume_file(self) -> str:
        """``saved/DERRD-<time>.pth`` -> ``saved/DERRD-<time>-last.pth``, written every epoch."""
        root, ext = os.path.splitext(self.saved_model_file)
        return f"{root}-last{ext}"

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's best-model checkpoint, written atomically."""
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        state = checkpoint.make(
            "model", self.config, self._best_state_dict(), self.model.other_parameter(),
            epoch=epoch, cur_step=self.cur_step, best_valid_score=self.best_valid_score,
            optimizer=self.optimizer.state_dict(),
        )
        checkpoint.atomic_save(state, path)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def _best_state_dict(self) -> dict:
        """The weights the best-model checkpoint holds: the model's current ones."""
        return self.model.state_dict()

    def _resume_fields(self) -> dict:
        """What this trainer adds to a resume point beyond the model and the random states."""
        return {
            "best_valid_result": self.best_valid_result,
            "optimizers": {self.optimizer_role: self.optimizer.state_dict()},
        }

    def _load_resume_fields(self, saved: dict) -> None:
        self.best_valid_result = saved["best_valid_result"]
        self.optimizer.load_state_dict(saved["optimizers"][self.optimizer_role])

    def _save_resume_point(self, epoch: int, by_rank: dict | None = None) -> None:
        """Everything needed to continue after ``epoch`` exactly as if never stopped; in a
        distributed run, every rank's random states (``by_rank``: lists by rank), each rank's
        sampler states being in its own file."""
        rng = {"by_rank": by_rank} if by_rank else {"rng": self.rng_state()}
        weights = self.model.state_dict()
        if by_rank:  # the samplers' states are in each rank's own file
            weights = {k: v for k, v in weights.items() if not is_extra_state(k)}
        state = checkpoint.make(
            "resume", self.config, weights, self.model.other_parameter(),
            epoch=epoch, cur_step=self.cur_step, best_valid_score=self.best_valid_score,
            saved_model_file=self.saved_model_file, **rng, **self._resume_fields(),
            teacher_fingerprint=getattr(self.model, "teacher_fingerprint", None),
        )
        checkpoint.atomic_save(state, self.resume_file)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        self._restore_rng(train_data)

        def after_validation(epoch_idx, valid_score):
            if saved:
                self._save_resume_point(epoch_idx)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        return super().fit(train_data, valid_data, verbose, saved, show_progress, after_validation)

    def discard_resume_point(self) -> None:
        """Remove the run's resume point and this rank's sampler files, once the run is done
        with (a model trained alone and published, say)."""
        for path in checkpoint.rank_files(self.resume_file, distributed.rank()):
            os.remove(path)
        distributed.barrier()
        if distributed.is_main() and os.path.isfile(self.resume_file):
            os.remove(self.resume_file)

    def resume_checkpoint(self, resume_file, key: str = "kd_resume"):
        """Continue a run from its ``-last.pth`` resume point (given by the setting ``key``)."""
        self.resume_from(checkpoint.read(resume_file, key, kinds=("resume",),
                                         device=self.device))

    def resume_from(self, saved: dict) -> None:
        """Continue the run whose resume point (a checkpoint dict) is ``saved``."""
        check_same_teacher(saved, self.model, self.config["kd_resume"] or self.resume_file)
        self.saved_model_file = saved["saved_model_file"]
        self.start_epoch = saved["epoch"] + 1
        self.cur_step = saved["cur_step"]
        self.best_valid_score = saved["best_valid_score"]
        self._pending_rng, samplers = rank_state(saved, self.resume_file)
        self.model.load_state_dict({**saved["state_dict"], **samplers})
        self.model.load_other_parameter(saved.get("other_parameter"))
        self._load_resume_fields(saved)
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")
