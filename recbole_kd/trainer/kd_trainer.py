"""KDTrainer: the resumable trainer plus what distillation needs."""

from __future__ import annotations

import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_kd.errors import TrainingError
from recbole_kd.model.backbone import clear_caches
from recbole_kd.trainer.resumable import ResumableTrainer


def check_finite(losses, names: list[str]) -> None:
    """Stop on a NaN or infinite loss term, naming it."""
    for name, loss in zip(names, losses if isinstance(losses, tuple) else (losses,)):
        if not torch.isfinite(loss):
            raise TrainingError(
                f"The training loss term '{name}' is {loss.item()}. Lower learning_rate (or this "
                "term's weight), and check the teacher checkpoint."
            )


class KDTrainer(ResumableTrainer):
    """The resumable trainer with an epoch-start hook for the model and named loss terms.

    The optimizer holds the trainable parameters only (the student and the distillers' own
    networks), never the frozen teacher.
    """

    optimizer_role = "student"

    def synchronised_modules(self) -> list[torch.nn.Module]:
        """The modules whose gradients ranks share, each stepped as one (distributed runs)."""
        return [self.model]

    def gradient_sync(self, module: torch.nn.Module) -> torch.Tensor | float:
        """A term to add to ``module``'s loss so that ranks share its gradients: none in a
        single process (see :class:`~recbole_kd.trainer.distributed_training.DistributedTraining`)."""
        return 0.0

    def _build_optimizer(self, **kwargs):
        if "params" not in kwargs and hasattr(self.model, "trainable_parameters"):
            kwargs["params"] = self.model.trainable_parameters()
        return super()._build_optimizer(**kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.on_epoch_start(epoch_idx)
        return super()._train_epoch(
            train_data, epoch_idx, loss_func or self._checked_loss, show_progress
        )

    _last_losses: tuple | None = None  # the step's terms, named when their sum is not finite

    def _checked_loss(self, interaction):
        self._last_losses = self.model.calculate_loss(interaction)
        return self._last_losses

    def _check_nan(self, loss):
        """RecBole's check of each step's summed loss, widened to infinities and naming the
        term: the only host-device synchronisation it adds to a step is RecBole's own."""
        if not torch.isfinite(loss):
            check_finite(self._last_losses, self.model.loss_names)
            raise TrainingError(
                f"The training loss is {loss.item()}. Lower learning_rate, and check the "
                "teacher checkpoint.")

    def evaluate_role(self, eval_data, role: str, show_progress: bool = False):
        """RecBole's evaluation of the model's current ``role`` model ("teacher" or "student")."""
        clear_caches(self.model.role_model(role))
        self.model.eval_role = role
        try:
            return Trainer.evaluate(self, eval_data, load_best_model=False,
                                    show_progress=show_progress)
        finally:
            self.model.eval_role = "student"

    def evaluate_roles(self, eval_data, load_best_model: bool = True,
                       show_progress: bool = False) -> dict[str, dict]:
        """Metrics of each model the run trains, by role: here the student's."""
        return {"student": self.evaluate(eval_data, load_best_model,
                                         show_progress=show_progress)}

    def best_valid_results(self) -> dict[str, dict | None]:
        """The best validation metrics of each model the run trains, by role."""
        return {"student": self.best_valid_result}

    def evaluate_alone(self, eval_data, states: dict[str, dict]) -> dict[str, dict]:
        """Metrics of the models trained alone (``states``: role -> state_dict), each evaluated
        in its role's slot, whose own weights are put back afterwards."""
        results = {}
        for role, state in states.items():
            module = self.model.role_model(role)
            current = {k: v.clone() for k, v in module.state_dict().items()}
            module.load_state_dict(state)
            try:
                results[role] = self.evaluate_role(eval_data, role)
            finally:
                module.load_state_dict(current)
                clear_caches(module)
        return results

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
