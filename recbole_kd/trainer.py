"""Trainers for the distillation models: RecBole's Trainer plus what distillation needs."""

from __future__ import annotations

import os

from recbole.trainer import Trainer
from recbole.utils import set_color


class KDTrainer(Trainer):
    """RecBole's Trainer with an epoch-start hook for the model and named loss terms.

    The optimizer holds the trainable parameters only (the student and the distillers' own
    networks), never the frozen teacher.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        # Two runs started within the same second would share RecBole's time-stamped file name.
        root, ext = os.path.splitext(self.saved_model_file)
        self.saved_model_file = f"{root}-{os.getpid()}{ext}"

    def _build_optimizer(self, **kwargs):
        if "params" not in kwargs and hasattr(self.model, "trainable_parameters"):
            kwargs["params"] = self.model.trainable_parameters()
        return super()._build_optimizer(**kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.on_epoch_start(epoch_idx)
        return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)

    def _check_nan(self, loss):
        if loss.isnan():
            raise ValueError(
                "Training loss is NaN. Lower learning_rate or the distillation weights "
                "(de_weight, rrd_weight), or check the teacher checkpoint."
            )

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
