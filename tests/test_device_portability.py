"""Files written on one device load on another: every file holds CPU tensors and a CPU config,
resume points are read to the CPU whatever the run's device, and a resume on another type of
device is refused rather than continued with other random streams. Checked on the CPU with
tensors that report another device and with a run whose device is ``meta``."""

from __future__ import annotations

import inspect
import random

import numpy as np
import pytest
import torch
from recbole.utils import init_logger

from recbole_kd import checkpoint
from recbole_kd.errors import CheckpointError
from recbole_kd.quick_start import run_recbole_kd
from tests.conftest import build, fast, make_config, trainer_for


class OnAnotherDevice(torch.Tensor):
    """A CPU tensor that reports a CUDA device, as the tensors of a run on a GPU do; ``cpu()``
    gives a plain CPU tensor, as it would on a GPU."""

    @property
    def device(self):
        return torch.device("cuda", 0)

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()


def as_if_on_a_gpu(module: torch.nn.Module) -> None:
    """Make every parameter and buffer of ``module`` report a CUDA device."""
    for sub in module.modules():
        for name, parameter in list(sub.named_parameters(recurse=False)):
            setattr(sub, name, torch.nn.Parameter(parameter.detach().as_subclass(OnAnotherDevice),
                                                  requires_grad=parameter.requires_grad))
        for name, buffer in list(sub.named_buffers(recurse=False)):
            setattr(sub, name, buffer.as_subclass(OnAnotherDevice))


def tensors_in(value):
    """Every tensor in a nested structure of dicts, lists and tuples."""
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)


def trained(model_name: str, small_data: str):
    config = make_config(model_name, small_data, epochs=1)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    trainer = trainer_for(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    return config, trainer, train_data


@pytest.mark.parametrize("model_name", ["DERRD", "BD"])
def test_every_file_a_gpu_run_writes_holds_cpu_tensors_and_a_cpu_config(small_data, monkeypatch,
                                                                        model_name):
    config, trainer, _ = trained(model_name, small_data)
    config["device"] = torch.device("cuda")  # as a run on a GPU has it
    model = trainer.model
    as_if_on_a_gpu(model)
    for optimizer in getattr(trainer, "optimizers", {"student": trainer.optimizer}).values():
        for state in optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim():
                    state[key] = value.as_subclass(OnAnotherDevice)
    written, save = {}, torch.save

    def recording_save(state, path, **kwargs):
        written[path.removesuffix(".tmp")] = state
        save(state, path, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", recording_save)
    trainer._save_checkpoint(0, verbose=False)
    trainer._save_resume_point(0)
    for role in model.exported_roles:
        model.export(role, f"exported-{role}.pth")
    assert len(written) == 2 + len(model.exported_roles)
    for path, state in written.items():
        devices = {(type(t).__name__, t.device.type) for t in tensors_in(state)}
        assert devices == {("Tensor", "cpu")}, path
        assert state["config"]["device"] == torch.device("cpu"), path
        assert not state["config"]["use_gpu"], path
    assert config["device"] == torch.device("cuda")  # the run's own config is left alone
    # A state_dict keeps what load_state_dict reads besides the tensors.
    saved = written[trainer.saved_model_file]["state_dict"]
    assert saved._metadata == model.state_dict()._metadata


def test_every_file_of_a_run_goes_through_the_one_writer(small_data, monkeypatch):
    """The files of a run (models trained alone, best checkpoints, resume points, exports) are
    all written by ``checkpoint.atomic_save``: atomically, and with CPU tensors."""
    callers = []
    save = torch.save

    def recording_save(state, path, **kwargs):
        callers.append(inspect.stack()[1].function)
        return save(state, path, **kwargs)

    monkeypatch.setattr(torch, "save", recording_save)
    monkeypatch.setattr(checkpoint.torch, "save", recording_save)
    run_recbole_kd("BD", config_dict={**fast("BD"), "data_path": small_data, "epochs": 2,
                                      "kd_student_alone": True})
    assert len(callers) >= 8 and set(callers) == {"atomic_save"}, callers


def draws(train_data) -> list:
    return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
            torch.randint(0, 10**6, (3,), generator=train_data.generator).tolist()]


def test_a_resume_point_is_read_to_the_cpu_whatever_the_run_s_device(small_data):
    """A run on another device (here ``meta``, where tensors hold no data) restores the random
    states of its resume point: they are read as CPU byte tensors, as generators need."""
    _, trainer, train_data = trained("DE", small_data)
    trainer.device = torch.device("meta")
    trainer._save_resume_point(0)
    expected = draws(train_data)

    config = make_config("DE", small_data, epochs=1)
    _, _, _, model = build(config)
    resumed = trainer_for(config, model)
    resumed.device = torch.device("meta")
    resumed.resume_checkpoint(trainer.resume_file)
    resumed._restore_rng(train_data)
    assert draws(train_data) == expected


def test_a_resume_on_another_type_of_device_is_refused(small_data):
    _, trainer, _ = trained("RRD", small_data)
    trainer._save_resume_point(0)
    assert torch.load(trainer.resume_file, weights_only=False)["device_type"] == "cpu"
    trainer.device = torch.device("meta")  # a resume point written on another device
    trainer._save_resume_point(0)
    config = make_config("RRD", small_data, epochs=1)
    resumed = trainer_for(config, build(config)[3])
    with pytest.raises(CheckpointError, match="written by a run on meta; this run is on cpu"):
        resumed.resume_checkpoint(trainer.resume_file)


@pytest.mark.parametrize("model_name", ["RD", "CD", "DCD"])
def test_a_generator_state_of_another_device_type_is_refused(small_data, model_name):
    config = make_config(model_name, small_data, rd_dynamic_start_epoch=0) if model_name == "RD" \
        else make_config(model_name, small_data)
    _, _, _, model = build(config)
    model.on_epoch_start(0)
    state = {k: v for k, v in model.state_dict().items() if k.endswith("_extra_state")}
    assert {v["generator_device"] for v in state.values()} == {"cpu"}
    for value in state.values():
        value["generator_device"] = "cuda"
    _, _, _, fresh = build(config)
    fresh.load_state_dict(state, strict=False)
    with pytest.raises(CheckpointError, match="saved random state is of a cuda generator"):
        fresh.on_epoch_start(1)


def test_cpu_only_settings_are_left_alone_on_another_device(small_data, monkeypatch):
    from recbole_kd.kernels import heap
    from recbole_kd.kernels.denormals import FlushDenormals
    from recbole_kd.trainer.factory import create_trainer

    config = make_config("RRD", small_data)
    _, _, _, model = build(config)
    kept = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: kept.append(True))
    on_cpu = create_trainer(config, model, ())
    assert isinstance(on_cpu, FlushDenormals) and kept == [True]
    config["device"] = torch.device("meta")  # as a run on a GPU has its own device
    elsewhere = create_trainer(config, model, ())
    assert not isinstance(elsewhere, FlushDenormals) and kept == [True]


@pytest.mark.parametrize("device,reproducibility,setting,asked", [
    ("cuda", True, None, True), ("cuda", False, None, False), ("cuda", False, True, True),
    ("cuda", True, False, False), ("cpu", True, True, False),
])
def test_deterministic_kernels_follow_kd_deterministic_on_cuda(monkeypatch, device,
                                                               reproducibility, setting, asked):
    from recbole_kd import determinism

    calls = []
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(determinism.torch, "use_deterministic_algorithms",
                        lambda mode, warn_only=False: calls.append((mode, warn_only)))
    determinism.apply({"device": torch.device(device), "reproducibility": reproducibility,
                       "kd_deterministic": setting})
    assert calls == ([(True, True)] if asked else [])
    import os
    assert (os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8") is asked
