"""Targets run in each rank of the distributed tests (module level, so spawned processes can
import them), and the free port they meet on."""

from __future__ import annotations

import hashlib
import socket

import torch
from recbole.utils import init_seed

from recbole_kd import distributed
from recbole_kd.config import KDConfig
from recbole_kd.quick_start import prepare_run
from recbole_kd.trainer.factory import create_trainer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def weight_digests(module: torch.nn.Module) -> dict[str, str]:
    """SHA-1 of every tensor of ``module``'s state, by name."""
    return {name: hashlib.sha1(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for name, value in module.state_dict().items() if isinstance(value, torch.Tensor)}


def train_and_gather_weights(model, dataset, config_file_list, config_dict) -> list[dict]:
    """Train ``model`` on this rank; every rank's final weights' digests, by rank."""
    config = KDConfig(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    run = prepare_run(config)
    trainer = create_trainer(config, run.model, run.loaders)
    trainer.fit(run.train_data, run.valid_data, verbose=False, saved=False)
    return distributed.all_gather_object(weight_digests(run.model))


def evaluate_weights(model, dataset, config_file_list, config_dict, state_file: str) -> dict:
    """Test metrics of ``model`` with the weights saved in ``state_file``, on this rank's users
    reduced over every rank."""
    config = KDConfig(model, dataset, config_file_list, config_dict)
    run = prepare_run(config)
    run.model.load_state_dict(torch.load(state_file))
    trainer = create_trainer(config, run.model, run.loaders)
    return dict(trainer.evaluate(run.test_data, load_best_model=False))


def run_killed_after_epoch(epoch: int, model, dataset, config_file_list, config_dict) -> None:
    """``run_recbole_kd`` on this rank, every rank killed (SIGKILL) right after the resume point
    of ``epoch`` is on disk: a deterministic point in the middle of a distributed run."""
    import os
    import signal

    from recbole_kd.quick_start import run_recbole_kd
    from recbole_kd.trainer.distributed_training import DistributedTraining

    save = DistributedTraining._save_resume_point

    def save_then_die(self, epoch_idx):
        save(self, epoch_idx)  # rank 0 has written it once every rank is past this line
        if epoch_idx == epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    DistributedTraining._save_resume_point = save_then_die
    run_recbole_kd(model, dataset, config_file_list, config_dict)
