"""ResumableTrainer: RecBole's Trainer whose runs continue exactly after any interruption.

Every epoch (whatever ``eval_step``) it writes a resume point (``…-last.pth``) beside the
best-model checkpoint: the weights, the optimizer, the early-stopping state and every random
state, so that a run resumed from it ends exactly as the uninterrupted one. The resume point of
the epoch that ends training (the last one, or an early stop) says so: a finished run is final,
and resuming it trains nothing and writes no checkpoint. Files are written atomically.
"""

from __future__ import annotations

import os
import random
from time import time

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import dict2str, early_stopping, set_color

from recbole_kd import checkpoint, distributed, errors
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


def resume_hint(path: str) -> str:
    """What continues a run whose latest resume point is ``path``."""
    if path.endswith(".partial"):  # a model trained alone for the cache: it goes on by itself
        return f"The same command continues it from {path}."
    return (f"Its resume point is {path}: the same command with --kd_resume={path} continues "
            "it (a comparison continues with the same command alone).")


def check_same_device_type(saved: dict, device: torch.device, path: str) -> None:
    """Refuse a resume point written on another type of device: the random streams of a CUDA
    run (dropout, Gumbel noise, the samplers' generators) cannot be continued on the CPU, nor
    the other way round, so the resumed run would not end as the uninterrupted one."""
    written_on = saved.get("device_type", "cpu")
    if written_on != device.type:
        raise CheckpointError(
            f"kd_resume '{path}' was written by a run on {written_on}; this run is on "
            f"{device.type}, whose random streams differ: resume it on {written_on} (RecBole's "
            "use_gpu and gpu_id), or unset kd_resume to start a new run.")


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
    finished = False  # training is over (last epoch done, or stopped early): nothing to resume

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
        # Generators take their states as CPU byte tensors, whatever device they draw on.
        torch.set_rng_state(state["torch"].cpu())
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([cuda.cpu() for cuda in state["cuda"]])
        if "loader" in state:
            train_data.generator.set_state(state["loader"].cpu())

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
            saved_model_file=self.saved_model_file, finished=self.finished,
            device_type=torch.device(self.device).type, **rng,
            **self._resume_fields(),
            teacher_fingerprint=getattr(self.model, "teacher_fingerprint", None),
        )
        checkpoint.atomic_save(state, self.resume_file)
        errors.interrupted_hint = resume_hint(self.resume_file)

    def validates(self, epoch_idx: int, valid_data) -> bool:
        """Whether epoch ``epoch_idx`` ends with a validation (RecBole's ``eval_step``)."""
        return bool(valid_data) and self.eval_step > 0 and (epoch_idx + 1) % self.eval_step == 0

    def _validate(self, valid_data, epoch_idx: int, verbose: bool,
                  show_progress: bool) -> tuple[bool, bool, float]:
        """RecBole's validation and early stopping: (improved, stop, the score for
        ``callback_fn``)."""
        start = time()
        score, result = self._valid_epoch(valid_data, show_progress=show_progress)
        self.best_valid_score, self.cur_step, stop, improved = early_stopping(
            score, self.best_valid_score, self.cur_step, max_step=self.stopping_step,
            bigger=self.valid_metric_bigger)
        if verbose:
            self.logger.info(
                set_color(f"epoch {epoch_idx} evaluating", "green")
                + f" [{set_color('time', 'blue')}: {time() - start:.2f}s, "
                + f"{set_color('valid_score', 'blue')}: {score:f}]")
            self.logger.info(set_color("valid result", "blue") + ": \n" + dict2str(result))
        self.tensorboard.add_scalar("Vaild_score", score, epoch_idx)  # RecBole's tag
        self.wandblogger.log_metrics({**result, "valid_step": (epoch_idx + 1) // self.eval_step - 1}, head="valid")
        if improved:
            self.best_valid_result = result
        if stop and verbose:
            best = epoch_idx - self.cur_step * self.eval_step
            self.logger.info(f"Finished training, best eval result in epoch {best}")
        return improved, stop, score

    def _train_and_log(self, train_data, epoch_idx: int, verbose: bool,
                       show_progress: bool) -> None:
        start = time()
        losses = self._train_epoch(train_data, epoch_idx, show_progress=show_progress)
        self.train_loss_dict[epoch_idx] = sum(losses) if isinstance(losses, tuple) else losses
        if verbose:
            self.logger.info(self._generate_train_loss_output(epoch_idx, start, time(), losses))
        self._add_train_loss_to_tensorboard(epoch_idx, losses)
        self.wandblogger.log_metrics(
            {"epoch": epoch_idx, "train_loss": losses, "train_step": epoch_idx}, head="train")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        """RecBole's training loop, with a resume point after every epoch. Unlike RecBole's, a
        run resumed after its end trains nothing and keeps its best checkpoint (RecBole saves
        the current weights as the best)."""
        self._restore_rng(train_data)
        self.eval_collector.data_collect(train_data)
        if self.finished:
            self.logger.info(set_color("The run had finished training", "yellow")
                             + f" (epoch {self.start_epoch - 1}): nothing is trained again and "
                             f"its best checkpoint is kept, {self.saved_model_file}")
            return self.best_valid_score, self.best_valid_result
        if self.config["train_neg_sample_args"].get("dynamic", False):
            train_data.get_model(self.model)
        for epoch_idx in range(self.start_epoch, self.epochs):
            self._train_and_log(train_data, epoch_idx, verbose, show_progress)
            validated = self.validates(epoch_idx, valid_data)
            improved = stop = False
            if validated:
                improved, stop, score = self._validate(valid_data, epoch_idx, verbose,
                                                       show_progress)
            # Without validation every epoch's weights are the model (RecBole's rule).
            if saved and (improved or self.eval_step <= 0 or not valid_data):
                self._save_checkpoint(epoch_idx, verbose=verbose)
            self.finished = stop or epoch_idx == self.epochs - 1
            if saved:
                self._save_resume_point(epoch_idx)
            if validated and callback_fn:
                callback_fn(epoch_idx, score)
            if stop:
                break
        self.finished = True
        self._add_hparam_to_tensorboard(self.best_valid_score)
        return self.best_valid_score, self.best_valid_result

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
        self.resume_from(checkpoint.read(resume_file, key, kinds=("resume",)))

    def resume_from(self, saved: dict) -> None:
        """Continue the run whose resume point (a checkpoint dict) is ``saved``."""
        path = self.config["kd_resume"] or self.resume_file
        check_same_device_type(saved, torch.device(self.device), path)
        check_same_teacher(saved, self.model, path)
        self.saved_model_file = saved["saved_model_file"]
        self.start_epoch = saved["epoch"] + 1
        self.cur_step = saved["cur_step"]
        self.best_valid_score = saved["best_valid_score"]
        self.finished = saved.get("finished", False)
        self._pending_rng, samplers = rank_state(saved, self.resume_file)
        self.model.load_state_dict({**saved["state_dict"], **samplers})
        self.model.load_other_parameter(saved.get("other_parameter"))
        self._load_resume_fields(saved)
        if not self.finished:
            self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")
