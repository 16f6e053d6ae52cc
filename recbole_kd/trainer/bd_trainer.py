"""BDTrainer: BD's teacher and student trained together, each with its own optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from time import time

import numpy as np
import torch
from recbole.utils import calculate_valid_score, dict2str, early_stopping, set_color
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_kd.trainer.kd_trainer import KDTrainer, check_finite


@dataclass
class ModelTrack:
    """Early stopping and best-model tracking of one of BD's two models."""

    best_score: float
    cur_step: int = 0
    best_result: dict | None = None
    best_state: dict | None = None  # the model's state_dict at its best validation, on CPU
    best_epoch: int = -1


class BDTrainer(KDTrainer):
    """Trains BD's teacher and student together, each with its own optimizer.

    Per batch the teacher steps first, then the student (whose targets are the teacher's scores
    from before that step). Both models are evaluated at every evaluation, each with its own early
    stopping and best model; training stops when neither has improved for ``stopping_step``
    evaluations. The checkpoint holds both models, both optimizers, both tracks and the sampler.
    """

    ROLES = ("teacher", "student")

    def __init__(self, config, model):
        super().__init__(config, model)
        worst = -np.inf if self.valid_metric_bigger else np.inf
        self.tracks = {role: ModelTrack(best_score=worst) for role in self.ROLES}

    def _build_optimizer(self, **kwargs):
        if "params" in kwargs:
            return super()._build_optimizer(**kwargs)
        self.optimizers = {}
        for role in self.ROLES:
            lr = self.config[f"{role}_learning_rate"] or self.learning_rate
            decay = self.config[f"{role}_weight_decay"]
            # Through self, so that a trainer mixin (e.g. FusedOptimizer) sees each optimizer.
            self.optimizers[role] = self._build_optimizer(
                params=getattr(self.model, role).parameters(),
                learning_rate=lr,
                weight_decay=self.weight_decay if decay is None else decay,
            )
        return self.optimizers["student"]

    def synchronised_modules(self):
        return [getattr(self.model, role) for role in self.ROLES]  # each steps on its own

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.on_epoch_start(epoch_idx)
        self.model.train()
        shards = getattr(train_data, "sampler", None)
        if hasattr(shards, "set_epoch"):  # a distributed run's: reshuffled every epoch
            shards.set_epoch(epoch_idx)
        # Summed on the device and read once per epoch: a step adds no host-device sync.
        totals = torch.zeros(4, dtype=torch.float64, device=self.device)
        batches = (
            tqdm(train_data, total=len(train_data), ncols=100,
                 desc=set_color(f"Train {epoch_idx:>5}", "pink"))
            if show_progress else train_data
        )
        for interaction in batches:
            batch = self.model.draw(interaction.to(self.device))
            for index, role in enumerate(self.ROLES):  # teacher first, then student
                optimizer = self.optimizers[role]
                optimizer.zero_grad()
                sync = self.gradient_sync(getattr(self.model, role))
                base, bd = self.model.losses(role, batch)
                (base + bd + sync).backward()
                if self.clip_grad_norm:
                    clip_grad_norm_(getattr(self.model, role).parameters(), **self.clip_grad_norm)
                optimizer.step()
                totals[2 * index: 2 * index + 2] += torch.stack([base.sum(), bd.sum()]).detach().double()
        # A non-finite term makes its epoch's sum non-finite: named here, before any checkpoint
        # of the epoch is written.
        check_finite(tuple(totals), self.model.loss_names)
        return tuple(totals.tolist())

    def _validate(self, valid_data, epoch_idx: int, verbose: bool,
                  show_progress: bool) -> tuple[bool, bool, float]:
        """Evaluate both models and update their tracks: (either improved, both have stopped
        improving, the student's best score). RecBole's own counters follow the student's
        track."""
        stopped, improvements = [], []
        for role in self.ROLES:
            start = time()
            result = self.evaluate_role(valid_data, role, show_progress)
            score = calculate_valid_score(result, self.valid_metric)
            track = self.tracks[role]
            track.best_score, track.cur_step, stop, improved = early_stopping(
                score, track.best_score, track.cur_step,
                max_step=self.stopping_step, bigger=self.valid_metric_bigger,
            )
            if improved:
                track.best_result, track.best_epoch = result, epoch_idx
                track.best_state = {
                    k: v.detach().cpu().clone()
                    for k, v in getattr(self.model, role).state_dict().items()
                }
            stopped.append(stop)
            improvements.append(improved)
            if verbose:
                self.logger.info(
                    set_color(f"epoch {epoch_idx} evaluating {role}", "green")
                    + f" [{set_color('time', 'blue')}: {time() - start:.2f}s, "
                    + f"{set_color('valid_score', 'blue')}: {score:f}]\n"
                    + set_color(f"{role} valid result", "blue") + ": \n" + dict2str(result)
                )
            self.tensorboard.add_scalar(f"Valid_score/{role}", score, epoch_idx)
        student = self.tracks["student"]
        self.best_valid_score, self.cur_step = student.best_score, student.cur_step
        self.best_valid_result = student.best_result
        if all(stopped) and verbose:
            self.logger.info(
                f"Finished BD: best teacher at epoch {self.tracks['teacher'].best_epoch}, "
                f"best student at epoch {student.best_epoch}")
        return any(improvements), all(stopped), student.best_score

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        student = self.tracks["student"]
        self.best_valid_score, self.best_valid_result = student.best_score, student.best_result
        return student.best_score, student.best_result

    def evaluate_roles(self, eval_data, load_best_model: bool = True,
                       show_progress: bool = False) -> dict[str, dict]:
        """Both models' metrics, by role. With ``load_best_model`` each model first takes back
        its weights from its own best validation."""
        if load_best_model:
            for role in self.ROLES:
                if self.tracks[role].best_state is not None:
                    getattr(self.model, role).load_state_dict(self.tracks[role].best_state)
        return {role: self.evaluate_role(eval_data, role, show_progress) for role in self.ROLES}

    def best_valid_results(self) -> dict[str, dict | None]:
        return {role: self.tracks[role].best_result for role in self.ROLES}

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """The student's metrics (RecBole's contract); ``evaluate_roles`` gives both."""
        return self.evaluate_roles(eval_data, load_best_model, show_progress)["student"]

    def _best_state_dict(self) -> dict:
        """Each model at its own best validation (the current weights where none is recorded)."""
        state = self.model.state_dict()
        for role in self.ROLES:
            for key, value in (self.tracks[role].best_state or {}).items():
                state[f"{role}.{key}"] = value
        return state

    def _resume_fields(self) -> dict:
        return {
            "optimizers": {role: opt.state_dict() for role, opt in self.optimizers.items()},
            "tracks": {role: vars(track) for role, track in self.tracks.items()},
        }

    def _load_resume_fields(self, saved: dict) -> None:
        for role, state in saved["optimizers"].items():
            self.optimizers[role].load_state_dict(state)
        self.tracks = {role: ModelTrack(**track) for role, track in saved["tracks"].items()}
