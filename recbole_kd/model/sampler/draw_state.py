"""The random state of a distiller's draws, checkpointed with the model.

Conventions as in :mod:`recbole_kd.model.sampler.positives`: every draw goes through a
``torch.Generator`` owned by the distiller, whose state (and whatever it drew that later epochs
reuse) travels in the model's ``state_dict``.
"""

from __future__ import annotations

import torch

from recbole_kd.errors import CheckpointError
from recbole_kd.model.sampler.positives import make_generator


class CheckpointedDraws:
    """Mixin for a ``Distiller``: its generator and the tensors named in ``state_names`` are
    saved through ``get_extra_state`` and restored by :meth:`restore_draws` (called from
    ``prepare``), so a resumed run draws what the uninterrupted one would have drawn."""

    state_names: tuple[str, ...] = ()
    generator: torch.Generator | None = None
    _pending_state: dict | None = None

    def get_extra_state(self) -> dict | None:
        if self.generator is None:
            return self._pending_state
        state = {"generator": self.generator.get_state(),
                 "generator_device": self.generator.device.type}
        for name in self.state_names:
            value = getattr(self, name, None)
            state[name] = None if value is None else value.clone()
        return state

    def set_extra_state(self, state: dict | None) -> None:
        self.generator, self._pending_state = None, state  # restored by restore_draws()

    def restore_draws(self, seed: int, device: torch.device) -> None:
        """A generator seeded with ``seed``, or the saved one with the saved tensors."""
        state = self.get_extra_state()
        self._pending_state = None
        self.generator = make_generator(seed, device)
        if state is None:
            return
        # A CPU and a CUDA generator's states are of different kinds: neither converts.
        saved_on = state.get("generator_device", "cpu")
        if saved_on != self.generator.device.type:
            raise CheckpointError(
                f"{type(self).__name__}'s saved random state is of a {saved_on} generator; this "
                f"run draws on {self.generator.device.type}: resume on {saved_on}, or start "
                "the run again.")
        self.generator.set_state(state["generator"].cpu())
        for name in self.state_names:
            value = state.get(name)
            setattr(self, name, None if value is None else value.to(device))
