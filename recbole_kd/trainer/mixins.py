"""Trainer mixins the factory composes, and the composition itself."""

from __future__ import annotations

from functools import cache

from recbole_kd.timing import clock


@cache
def with_mixin(mixin: type, trainer_class: type) -> type:
    """``trainer_class`` with ``mixin`` in front, named after both; one class per pair, so
    repeated runs share it."""
    return type(f"{mixin.__name__}{trainer_class.__name__}", (mixin, trainer_class),
                {"__doc__": f"{trainer_class.__name__} with {mixin.__name__}."})


class EpochTimer:
    """Records the wall time of every training epoch (evaluation excluded) in ``epoch_seconds``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_seconds: list[float] = []

    # A resume point keeps the times of the epochs before it (ResumableTrainer's).
    def _resume_fields(self) -> dict:
        return {**super()._resume_fields(), "epoch_seconds": list(self.epoch_seconds)}

    def _load_resume_fields(self, saved: dict) -> None:
        super()._load_resume_fields(saved)
        self.epoch_seconds = list(saved.get("epoch_seconds", []))

    def _train_epoch(self, *args, **kwargs):
        start = clock()
        losses = super()._train_epoch(*args, **kwargs)
        self.epoch_seconds.append(clock() - start)
        return losses


class ClosesTensorBoard:
    """Closes the TensorBoard writer when ``fit`` ends. RecBole never closes it, so each run
    would leave a writer thread and an open event file behind, which add up over the many runs
    of a comparison or a tuning (and the thread later flushes into a folder that may be gone).
    A later ``add_scalar`` reopens it."""

    def fit(self, *args, **kwargs):
        try:
            return super().fit(*args, **kwargs)
        finally:
            writer = getattr(self, "tensorboard", None)
            if writer is not None:
                writer.close()
