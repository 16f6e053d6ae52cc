"""Runs over several processes with torch.distributed: the process group, which rank writes,
and the launcher.

A run is distributed when RecBole's ``local_rank`` is set (the launcher below sets it, as
RecBole's ``run_recboles`` does) or when torchrun's environment variables are present. The
backend is NCCL on CUDA and gloo on CPU (``kd_dist_backend`` overrides it). Rank 0 writes every
file; the other ranks wait for it at a barrier and read what it wrote.
"""

from __future__ import annotations

import copy
import os
import pickle
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from recbole.utils import ModelType

from recbole_kd.errors import KDConfigError, KDError, TrainingError

# RecBole's keys of a distributed run: they never reach a saved checkpoint's config.
DISTRIBUTED_KEYS = ("nproc", "world_size", "ip", "port", "offset")
TORCHRUN_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE")


# ----- the process group ---------------------------------------------------------------------
def requested(config_dict: dict) -> bool:
    """True when this process is one rank of a distributed run."""
    return "local_rank" in config_dict or all(v in os.environ for v in TORCHRUN_VARIABLES)


def backend_of(config_dict: dict) -> tuple[bool, str]:
    """(whether the run's ranks use CUDA devices, its backend), refused where they cannot work."""
    if config_dict.get("MODEL_TYPE") == ModelType.SEQUENTIAL:
        raise KDConfigError(
            "Distributed runs (--nproc, --world_size, torchrun) shard a general model's users; "
            "a sequential run trains in one process: leave --nproc at 1.")
    on_cuda = bool(config_dict.get("use_gpu", True)) and torch.cuda.is_available() \
        and str(config_dict.get("gpu_id", "")) != ""
    backend = config_dict.get("kd_dist_backend") or ("nccl" if on_cuda else "gloo")
    if backend == "nccl" and not on_cuda:
        raise KDConfigError("kd_dist_backend: nccl needs CUDA devices; on CPU use gloo (or "
                            "leave kd_dist_backend unset).")
    return on_cuda, backend


def init_process(config_dict: dict) -> None:
    """Join the run's process group (once per process) and set the rank's device, in place of
    RecBole's ``Config._init_device``, which supports NCCL on CUDA only."""
    from_torchrun = "local_rank" not in config_dict
    if from_torchrun:
        local_rank, world_size = int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
        config_dict.update(
            local_rank=local_rank, world_size=world_size,
            nproc=int(os.environ.get("LOCAL_WORLD_SIZE", world_size)),
            offset=int(os.environ["RANK"]) - local_rank,
        )
    local_rank = config_dict["local_rank"]
    on_cuda, backend = backend_of(config_dict)
    if on_cuda:
        gpus = str(config_dict["gpu_id"]).split(",")
        if len(gpus) < config_dict["nproc"]:
            raise KDConfigError(
                f"gpu_id '{config_dict['gpu_id']}' names {len(gpus)} GPU(s) for nproc "
                f"{config_dict['nproc']} processes on this machine: name one GPU per process.")
        config_dict["device"] = torch.device("cuda", local_rank)
        torch.cuda.set_device(local_rank)
    else:
        config_dict["device"] = torch.device("cpu")
        if "OMP_NUM_THREADS" not in os.environ:  # the machine's cores shared among its ranks
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // config_dict["nproc"]))
    if not dist.is_initialized():
        # One timeout for both backends: NCCL's default (10 minutes) is shorter than gloo's.
        timeout = timedelta(minutes=float(config_dict.get("kd_dist_timeout") or 120))
        if not from_torchrun and local_rank == 0 and config_dict["world_size"] > config_dict["nproc"]:
            # The other ranks run on other machines: say what this one waits for, and how long.
            print(f"Waiting for {config_dict['world_size'] - config_dict['nproc']} more rank(s) "
                  f"at {config_dict['ip']}:{config_dict['port']}, started on other machines with "
                  f"--group_offset; the run ends after kd_dist_timeout "
                  f"({timeout.total_seconds() / 60:g} minutes) without them.", file=sys.stderr,
                  flush=True)
        if from_torchrun:
            dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        else:
            dist.init_process_group(
                backend=backend, rank=local_rank + config_dict["offset"],
                world_size=config_dict["world_size"],
                init_method=f"tcp://{config_dict['ip']}:{config_dict['port']}", timeout=timeout,
            )
    config_dict["single_spec"] = False
    # RecBole makes its folders by a check then makedirs, which ranks sharing a folder can race
    # on: each machine's first rank makes them while the others wait.
    if local_rank == 0:
        for folder in (os.path.join("log", str(config_dict.get("model"))), "log_tensorboard",
                       config_dict.get("checkpoint_dir") or "saved"):
            os.makedirs(folder, exist_ok=True)
    barrier()
    if rank() != 0:  # RecBole's quieting of the other ranks
        config_dict.update(state="error", show_progress=False, verbose=False)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the run (0 in a single-process run)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the rank that writes the run's files."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. a file name that holds the time and pid)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(value: Any) -> list:
    """Every rank's ``value``, by rank."""
    if not is_distributed():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of ``tensor`` (a copy), on the backend's device."""
    if not is_distributed():
        return tensor.clone()
    device = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
    total = tensor.to(device).clone()
    dist.all_reduce(total)
    return total.to(tensor.device)


def rank_counts(id_sets: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """For each set of distinct ids (each id below ``size``), how many ranks hold each id in
    their set of the same place in the list (1 everywhere in a single process)."""
    marks = torch.zeros((len(id_sets), size), dtype=torch.int32, device=id_sets[0].device)
    for row, ids in enumerate(id_sets):
        marks[row, ids] = 1
    totals = all_reduce_sum(marks)
    return [totals[row, ids] for row, ids in enumerate(id_sets)]


def written_by_main(write: Callable[[], Any]) -> Any:
    """Run ``write`` on rank 0 only; every rank returns its result once it is done."""
    result = write() if is_main() else None
    barrier()
    return broadcast_object(result)


def end_process(wait_for_others: bool = True) -> None:
    """Leave the process group (the end of a distributed run), by default once every rank has
    reached this point: a rank that tears gloo down while another still talks to it can abort
    ("terminate called without an active exception")."""
    if is_distributed():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()


# ----- the launcher --------------------------------------------------------------------------
def spawn(target: Callable[..., Any], nproc: int, world_size: int, ip: str, port: str | int,
          group_offset: int, config_dict: dict, args: tuple) -> Any:
    """Run ``target(*args, config_dict=...)`` in ``nproc`` processes of a ``world_size``-rank
    group, as RecBole's ``run_recboles`` does; returns rank 0's result. An error on any rank
    ends every rank and is raised here (a :class:`KDError` as itself)."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    if nproc < 1:
        raise KDConfigError(f"nproc {nproc}: a run needs at least one process.")
    world_size = nproc if world_size <= 0 else world_size
    if world_size < nproc:
        raise KDConfigError(f"world_size {world_size} is below nproc {nproc}: world_size counts "
                            "the processes of every machine.")
    config_dict = {**config_dict, "world_size": world_size, "ip": ip, "port": str(port),
                   "nproc": nproc, "offset": group_offset}
    # Outcomes travel through files: a queue's pipe blocks a large result until it is read,
    # and mp.spawn reads nothing before every process has ended.
    with tempfile.TemporaryDirectory(prefix="recbole_kd-") as outcomes:
        try:
            mp.spawn(_rank_main, args=(target, args, config_dict, outcomes), nprocs=nproc,
                     join=True)
        except ProcessException as error:
            failure = _read_outcome(outcomes, "error")
            if isinstance(failure, KDError):
                raise failure from None
            raise TrainingError(
                f"A rank of the distributed run failed: {failure or error}") from None
        return _read_outcome(outcomes, "result")


def _rank_main(local_rank: int, target, args: tuple, config_dict: dict, outcomes: str) -> None:
    try:
        result = target(*args, config_dict={**config_dict, "local_rank": local_rank})
    except BaseException as error:
        _write_outcome(outcomes, f"error-{local_rank}",
                       error if isinstance(error, KDError) else traceback.format_exc())
        end_process(wait_for_others=False)  # the launcher ends every rank: none waits for it
        raise
    end_process()
    if local_rank == 0 and config_dict["offset"] == 0:
        _write_outcome(outcomes, "result", result)


def _write_outcome(folder: str, name: str, value: Any) -> None:
    path = os.path.join(folder, f"{name}.pkl")
    with open(path + ".tmp", "wb") as f:
        pickle.dump(value, f)
    os.replace(path + ".tmp", path)


def _read_outcome(folder: str, prefix: str) -> Any:
    """The outcome named ``prefix`` (the first rank's, for errors); None when there is none."""
    for name in sorted(os.listdir(folder)):
        if name.startswith(prefix) and name.endswith(".pkl"):
            with open(os.path.join(folder, name), "rb") as f:
                return pickle.load(f)
    return None


# ----- RecBole's single-process code paths inside a distributed run --------------------------
@contextmanager
def single_process_view(config) -> Iterator[None]:
    """``config`` read as a single-process run's while the block runs: RecBole's own
    distributed paths (DDP on CUDA devices only, padded evaluation shards) are replaced by the
    package's."""
    before = config.final_config_dict.get("single_spec", True)
    config.final_config_dict["single_spec"] = True
    try:
        yield
    finally:
        config.final_config_dict["single_spec"] = before


def single_process_config(config):
    """A copy of ``config`` as a single process's: what a saved checkpoint holds, so that stock
    RecBole loads it in a plain process."""
    if config is None or config.final_config_dict.get("single_spec", True):
        return config
    plain = copy.copy(config)
    final = {k: v for k, v in config.final_config_dict.items() if k not in DISTRIBUTED_KEYS}
    device = final.get("device")
    final.update(single_spec=True, local_rank=0,
                 device=torch.device(device.type) if isinstance(device, torch.device) else device)
    plain.final_config_dict = final
    return plain
