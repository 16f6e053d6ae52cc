"""Shared helpers of the benchmark scripts: one timed run, and Markdown tables."""

from __future__ import annotations

import time

from recbole.utils import init_logger

from recbole_kd.config import KDConfig
from recbole_kd.protocol import create_trainer
from recbole_kd.quick_start import build


def timed_run(model: str, dataset: str, config_dict: dict) -> dict:
    """Train and test one model; add the mean training seconds per epoch (evaluation excluded)."""
    config = KDConfig(model, dataset, config_dict=config_dict)
    init_logger(config)
    train_data, valid_data, test_data, net = build(config)
    trainer = create_trainer(config, net, (train_data, valid_data, test_data))
    epoch_seconds = []
    train_epoch = trainer._train_epoch

    def timed_epoch(*args, **kwargs):
        start = time.perf_counter()
        loss = train_epoch(*args, **kwargs)
        epoch_seconds.append(time.perf_counter() - start)
        return loss

    trainer._train_epoch = timed_epoch
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True)
    return {
        "test": dict(test),
        "seconds_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "epochs": len(epoch_seconds),
        "saved_model_file": trainer.saved_model_file,
        "trainer": trainer,
    }


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
