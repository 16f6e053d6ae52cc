"""Trainers for the distillation models: RecBole's Trainer plus what distillation needs."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from time import time

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import calculate_valid_score, dict2str, early_stopping, set_color
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_kd import checkpoint
from recbole_kd.backbone import clear_caches


def check_finite(losses, names: list[str]) -> None:
    """Stop on a NaN or infinite loss term, naming it."""
    for name, loss in zip(names, losses if isinstance(losses, tuple) else (losses,)):
        if not torch.isfinite(loss):
            raise ValueError(
                f"The training loss term '{name}' is {loss.item()}. Lower learning_rate (or this "
                "term's weight), and check the teacher checkpoint."
            )


class KDTrainer(Trainer):
    """RecBole's Trainer with an epoch-start hook for the model and named loss terms.

    The optimizer holds the trainable parameters only (the student and the distillers' own
    networks), never the frozen teacher.
    """

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

    def _build_optimizer(self, **kwargs):
        if "params" not in kwargs and hasattr(self.model, "trainable_parameters"):
            kwargs["params"] = self.model.trainable_parameters()
        return super()._build_optimizer(**kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.on_epoch_start(epoch_idx)
        return super()._train_epoch(
            train_data, epoch_idx, loss_func or self._checked_loss, show_progress
        )

    def _checked_loss(self, interaction):
        losses = self.model.calculate_loss(interaction)
        check_finite(losses, self.model.loss_names)
        return losses

    def evaluate_role(self, eval_data, role: str, show_progress: bool = False):
        """RecBole's evaluation of the model's current ``role`` model ("teacher" or "student")."""
        self.model.eval_role = role
        clear_caches(getattr(self.model, role))
        try:
            return Trainer.evaluate(self, eval_data, load_best_model=False,
                                    show_progress=show_progress)
        finally:
            self.model.eval_role = "student"

    # ----- checkpoints: the best model (RecBole's file) and the last epoch (for resuming) -------
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
            "optimizers": {"student": self.optimizer.state_dict()},
        }

    def _load_resume_fields(self, saved: dict) -> None:
        self.best_valid_result = saved["best_valid_result"]
        self.optimizer.load_state_dict(saved["optimizers"]["student"])

    def _save_resume_point(self, epoch: int) -> None:
        """Everything needed to continue after ``epoch`` exactly as if never stopped."""
        state = checkpoint.make(
            "resume", self.config, self.model.state_dict(), self.model.other_parameter(),
            epoch=epoch, cur_step=self.cur_step, best_valid_score=self.best_valid_score,
            saved_model_file=self.saved_model_file, rng=self.rng_state(), **self._resume_fields(),
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

    def resume_checkpoint(self, resume_file):
        """Continue a run from its ``-last.pth`` resume point."""
        saved = checkpoint.read(resume_file, "kd_resume", kinds=("resume",), device=self.device)
        self.saved_model_file = saved["saved_model_file"]
        self.start_epoch = saved["epoch"] + 1
        self.cur_step = saved["cur_step"]
        self.best_valid_score = saved["best_valid_score"]
        self.model.load_state_dict(saved["state_dict"])
        self.model.load_other_parameter(saved.get("other_parameter"))
        self._load_resume_fields(saved)
        self._pending_rng = saved["rng"]
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        if not isinstance(losses, tuple):
            return super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        places = self.config["loss_decimal_place"] or 4
        terms = ", ".join(
            set_color(name, "blue") + f": {value:.{places}f}"
            for name, value in zip(self.model.loss_names, losses)
        )
        head = set_color(f"epoch {epoch_idx} training", "green")
        return f"{head} [{set_color('time', 'blue')}: {e_time - s_time:.2f}s, {terms}]"

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        if not isinstance(losses, tuple):
            return super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)
        for name, value in zip(self.model.loss_names, losses):
            self.tensorboard.add_scalar(f"{tag}/{name}", value, epoch_idx)


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
        self.teacher_results: dict = {}

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

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.on_epoch_start(epoch_idx)
        self.model.train()
        totals = [0.0] * 4
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
                base, bd = self.model.losses(role, batch)
                check_finite((base, bd), self.model.loss_names[2 * index: 2 * index + 2])
                (base + bd).backward()
                if self.clip_grad_norm:
                    clip_grad_norm_(getattr(self.model, role).parameters(), **self.clip_grad_norm)
                optimizer.step()
                totals[2 * index] += base.item()
                totals[2 * index + 1] += bd.item()
        return tuple(totals)

    def _validate(self, valid_data, epoch_idx: int, verbose: bool,
                  show_progress: bool) -> tuple[bool, bool]:
        """Evaluate both models and update their tracks: (either improved, both have stopped
        improving). RecBole's own counters follow the student's track."""
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
        return any(improvements), all(stopped)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        self._restore_rng(train_data)
        self.eval_collector.data_collect(train_data)
        for epoch_idx in range(self.start_epoch, self.epochs):
            start = time()
            losses = self._train_epoch(train_data, epoch_idx, show_progress=show_progress)
            self.train_loss_dict[epoch_idx] = sum(losses)
            if verbose:
                self.logger.info(self._generate_train_loss_output(epoch_idx, start, time(), losses))
            self._add_train_loss_to_tensorboard(epoch_idx, losses)
            if not (valid_data and self.eval_step > 0 and (epoch_idx + 1) % self.eval_step == 0):
                continue
            improved, stop = self._validate(valid_data, epoch_idx, verbose, show_progress)
            if saved and improved:
                self._save_checkpoint(epoch_idx, verbose=verbose)
            if saved:
                self._save_resume_point(epoch_idx)
            if callback_fn:
                callback_fn(epoch_idx, self.tracks["student"].best_score)
            if stop:
                if verbose:
                    self.logger.info(
                        "Finished BD: best teacher at epoch "
                        f"{self.tracks['teacher'].best_epoch}, best student at epoch "
                        f"{self.tracks['student'].best_epoch}"
                    )
                break
        student = self.tracks["student"]
        self.best_valid_score, self.best_valid_result = student.best_score, student.best_result
        return student.best_score, student.best_result

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """The student's metrics; the teacher's land in ``teacher_results``. With
        ``load_best_model`` each model first takes back its weights from its best validation."""
        if load_best_model:
            for role in self.ROLES:
                if self.tracks[role].best_state is not None:
                    getattr(self.model, role).load_state_dict(self.tracks[role].best_state)
        teacher_result = self.evaluate_role(eval_data, "teacher", show_progress)
        self.teacher_results = {
            "teacher_best_valid_score": self.tracks["teacher"].best_score,
            "teacher_best_valid_result": self.tracks["teacher"].best_result,
            "teacher_test_result": teacher_result,
        }
        return self.evaluate_role(eval_data, "student", show_progress)

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
