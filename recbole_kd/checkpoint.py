"""One checkpoint schema for every file recbole_kd writes, and one reader for all of them.

Every file holds RecBole's keys (``config``, ``epoch``, ``cur_step``, ``best_valid_score``,
``state_dict``, ``other_parameter``), so RecBole's own loaders read it, plus
``recbole_kd: {format, kind}``. The kinds:

- ``model``: the best model of a run (RecBole's ``saved_model_file``); a model trained alone and
  cached as a teacher or warm-up is one too. RecBole's own checkpoints are read as this kind.
- ``resume``: the ``-last.pth`` point written after every epoch, with everything needed to
  continue the run exactly (optimizers, random states, samplers inside ``state_dict``).
- ``export``: one model of a distillation run (the student; BD's teacher too) as a checkpoint of
  its own RecBole model, which stock RecBole loads.

Every file holds CPU tensors and a config whose ``device`` is the CPU, whatever device the run
trained on: stock RecBole's ``load_data_and_model``, which calls ``torch.load`` without a
``map_location`` and moves the model to ``config["device"]``, loads any of them on a machine
without a GPU. Every file is read to the CPU too (random states must stay CPU tensors), and
moved to the run's device by whoever loads it. A distributed run's files hold a single
process's config (rank 0 writes them), so they load in a plain process. This module imports
nothing from the package but its error classes and :mod:`recbole_kd.distributed`'s view of a
config.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import itertools
import os
from typing import Any

import torch

from recbole_kd.distributed import single_process_config
from recbole_kd.errors import CheckpointError

FORMAT = 1
KINDS = ("model", "resume", "export")
_DESCRIPTION = {
    "model": "a best-model checkpoint",
    "resume": "a resume point ('-last.pth')",
    "export": "an exported model",
}


_RUN_NUMBERS = itertools.count()


def run_file(checkpoint_dir: str, model: str, stamp: str) -> str:
    """``<checkpoint_dir>/<model>-<stamp>-<pid>-<n>.pth``, a name no other run has taken: RecBole
    names files by the second alone, so two runs started in the same second shared one."""
    while True:
        name = f"{model}-{stamp}-{os.getpid()}-{next(_RUN_NUMBERS)}.pth"
        path = os.path.join(checkpoint_dir, name)
        if not any(os.path.exists(path[:-4] + suffix) for suffix in (".pth", "-last.pth")):
            return path


def make(kind: str, config, state_dict: dict, other_parameter: Any = None, epoch: int = 0,
         cur_step: int = 0, best_valid_score: float = 0.0, **fields: Any) -> dict:
    """A checkpoint dict of ``kind``: RecBole's keys, the schema's marker and ``fields``."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    return {
        "config": stored_config(config),
        "epoch": epoch,
        "cur_step": cur_step,
        "best_valid_score": best_valid_score,
        "state_dict": state_dict,
        "other_parameter": other_parameter,
        **fields,
        "recbole_kd": {"format": FORMAT, "kind": kind},
    }


def stored_config(config):
    """What a file holds of ``config``: a single process's, on the CPU (see the module's
    docstring); the run's own config is left as it is."""
    config = single_process_config(config)
    if config is None:
        return None
    stored = copy.copy(config)
    stored.final_config_dict = {**config.final_config_dict, "device": torch.device("cpu"),
                                "use_gpu": False}
    return stored


def on_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (through dicts, lists and tuples) on the CPU; a
    state_dict keeps its ``_metadata``, which ``load_state_dict`` reads."""
    if torch.is_tensor(value):
        return value if value.device.type == "cpu" else value.detach().cpu()
    if isinstance(value, dict):
        moved = type(value)((key, on_cpu(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):
            moved._metadata = value._metadata
        return moved
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(on_cpu(item) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


def weights_fingerprint(state_dict: dict) -> str:
    """A hash of a state_dict's names, shapes, dtypes and values: the identity of a model's
    weights, wherever they were read from."""
    digest = hashlib.sha1()
    for key in sorted(state_dict):
        value = state_dict[key]
        digest.update(key.encode())
        if torch.is_tensor(value):
            value = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{value.dtype}{tuple(state_dict[key].shape)}".encode())
            digest.update(value.view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


def atomic_save(state: dict, path: str) -> str:
    """``torch.save`` of ``state`` with its tensors on the CPU, through a temporary file and a
    rename: a kill mid-save never leaves a truncated file under ``path``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(on_cpu(state), path + ".tmp", pickle_protocol=4)
    os.replace(path + ".tmp", path)
    return path


def rank_file(resume_file: str, rank: int, epoch: int) -> str:
    """Where a rank of a distributed run keeps its sampler state beside the resume point
    ``…-last.pth`` of ``epoch``: ``…-last.rank<rank>.epoch<epoch>.pth``."""
    root, ext = os.path.splitext(resume_file)
    return f"{root}.rank{rank}.epoch{epoch}{ext}"


def rank_files(resume_file: str, rank: int) -> list[str]:
    """Every :func:`rank_file` of ``rank`` beside ``resume_file``, of any epoch."""
    root, ext = os.path.splitext(resume_file)
    return glob.glob(f"{glob.escape(root)}.rank{rank}.epoch*{ext}")


def resume_point_in(folder: str) -> str | None:
    """The newest resume point (``…-last.pth``) in ``folder``, if any."""
    found = glob.glob(os.path.join(glob.escape(folder), "*-last.pth"))
    return max(found, key=os.path.getmtime) if found else None


def kind_of(checkpoint: dict) -> str:
    """The kind of a checkpoint dict; RecBole's own checkpoints are ``model``."""
    marker = checkpoint.get("recbole_kd")
    return marker["kind"] if isinstance(marker, dict) else "model"


def read(path: str, key: str, kinds: tuple[str, ...] = ("model", "export")) -> dict:
    """The checkpoint at ``path``, given by the setting ``key``, on the CPU, refused unless it
    is one of ``kinds`` written in this schema (or by RecBole itself). Never read to the run's
    device: the random states it holds must stay CPU tensors, and loading a model's
    state_dict copies its tensors to the model's device anyway."""
    if not path or not os.path.isfile(str(path)):
        raise CheckpointError(f"{key} '{path}' does not exist: check the path.")
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(
            f"{key} '{path}' could not be read ({type(error).__name__}): it is corrupt or not a "
            "checkpoint. Point it to a .pth file written by RecBole or recbole_kd."
        ) from error
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        raise CheckpointError(
            f"{key} '{path}' is not a RecBole checkpoint (it has no 'config' and 'state_dict')."
        )
    marker = checkpoint.get("recbole_kd")
    if marker is None and "rng" in checkpoint:
        raise CheckpointError(
            f"{key} '{path}' was written by recbole_kd 0.1, whose resume points this version "
            "cannot continue: start the run again."
        )
    if marker is not None and marker.get("format") != FORMAT:
        raise CheckpointError(
            f"{key} '{path}' has checkpoint format {marker.get('format')}; this recbole_kd reads "
            f"format {FORMAT}. Use the recbole_kd version that wrote it."
        )
    kind = kind_of(checkpoint)
    if kind not in kinds:
        wanted = " or ".join(_DESCRIPTION[k] for k in kinds)
        raise CheckpointError(f"{key} '{path}' is {_DESCRIPTION[kind]}, not {wanted}.")
    return checkpoint
