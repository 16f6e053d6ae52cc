"""Targets run in each rank of the distributed tests (module level, so spawned processes can
import them), and the free port they meet on."""

from __future__ import annotations

import gc
import hashlib
import socket
import weakref

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
    """Train ``model`` on this rank; every rank's final weights' digests, by rank, with
    ``teacher_freed``: whether a released teacher's weights are gone from memory (under DDP)."""
    config = KDConfig(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    run = prepare_run(config)
    run.take_pretrained_states()
    teacher_weight = weakref.ref(next(run.model.teacher.parameters()))
    trainer = create_trainer(config, run.model, run.loaders)
    trainer.fit(run.train_data, run.valid_data, verbose=False, saved=False)
    gc.collect()
    freed = run.model.teacher is None and teacher_weight() is None
    return distributed.all_gather_object({**weight_digests(run.model), "teacher_freed": freed})


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


def term_gradients(model, config: KDConfig, batch: dict, sync=None) -> list[dict]:
    """The gradient of each loss term of ``model`` (a distillation model) on ``batch`` (user,
    pos, neg tensors), by term: parameter name -> gradient. ``sync`` (a trainer) shares the
    gradients over ranks."""
    from recbole.data.interaction import Interaction

    interaction = Interaction({model.USER_ID: batch["user"], model.ITEM_ID: batch["pos"],
                               model.NEG_ITEM_ID: batch["neg"]})
    gradients = []
    for index in range(len(model.loss_names)):
        model.zero_grad()
        term = model.calculate_loss(interaction)[index]
        (term + (sync.gradient_sync(model) if sync else 0.0)).backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()
                          if p.grad is not None})
    return gradients


def bd_gradients(model, batch: dict, sync=None) -> list[dict]:
    """The gradient of each BD model's loss (its own plus its BD term) on ``batch``, teacher's
    then student's, each as the trainer takes it; ``sync`` (a trainer) shares them over ranks."""
    from recbole.data.interaction import Interaction

    draws = model.draw(Interaction({model.USER_ID: batch["user"], model.ITEM_ID: batch["pos"],
                                    model.NEG_ITEM_ID: batch["neg"]}))
    gradients = []
    for role in ("teacher", "student"):
        module = getattr(model, role)
        model.zero_grad()
        share = sync.gradient_sync(module) if sync else 0.0
        base, bd = model.losses(role, draws)
        (base + bd + share).backward()
        gradients.append({name: p.grad.clone() for name, p in module.named_parameters()
                          if p.grad is not None})
    return gradients


def without_gumbel_noise() -> None:
    """DE's expert selection without its random noise (the selection network's softmax), so
    that ranks and a single process select alike."""
    from recbole_kd.model import layers

    layers.gumbel_softmax = lambda alpha, tau, generator=None: alpha


def gradients_of_rank_share(model_name, dataset, config_file_list, config_dict,
                            batch_file: str, noise: bool = True) -> list[dict]:
    """One step's gradients, each rank on its share of the batch in ``batch_file`` (``shares``:
    the batch's positions by rank), shared over ranks as training shares them."""
    if not noise:
        without_gumbel_noise()
    config = KDConfig(model_name, dataset, config_file_list, config_dict)
    run = prepare_run(config)
    trainer = create_trainer(config, run.model, run.loaders)
    run.model.on_epoch_start(0)
    saved = torch.load(batch_file)
    share = {k: saved[k][saved["shares"][distributed.rank()]] for k in ("user", "pos", "neg")}
    if model_name == "BD":
        return bd_gradients(run.model, share, sync=trainer)
    return term_gradients(run.model, config, share, sync=trainer)


def train_shard_contents(model, dataset, config_file_list, config_dict) -> list[dict]:
    """Every rank's training shard: its users, its rows of one epoch and its batches' sizes."""
    from recbole_kd.sharding import row_users

    config = KDConfig(model, dataset, config_file_list, config_dict)
    train_data = prepare_run(config).train_data
    users = row_users(train_data)
    train_data.set_epoch(1)
    rows = train_data.epoch_positions()
    batches = [len(batch) for batch in train_data]
    return distributed.all_gather_object({"users": set(users[train_data.positions].tolist()),
                                          "positions": train_data.positions, "rows": rows,
                                          "batches": batches})
