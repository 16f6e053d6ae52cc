"""One SASRec training step (a batch of 2,048 ml-100k rows, hidden 16, one thread) with autograd's
anomaly detection on, as importing RecBole's sequential models leaves it, and off, as recbole_kd
puts it back: the median of 5 steps each, side by side in one process.

    python benchmarks/anomaly_detection.py
"""

from __future__ import annotations

import statistics
import time

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec


def step_seconds(model, optimizer, batch, anomaly: bool, repeats: int = 5) -> float:
    torch.autograd.set_detect_anomaly(anomaly)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    config = Config("SASRec", "ml-100k", config_dict={
        "hidden_size": 16, "inner_size": 64, "train_neg_sample_args": None, "state": "ERROR"})
    train, _, _ = data_preparation(config, create_dataset(config))
    model = SASRec(config, train._dataset)
    optimizer = torch.optim.Adam(model.parameters())
    batch = next(iter(train))
    step_seconds(model, optimizer, batch, False, repeats=2)  # warm-up
    on = step_seconds(model, optimizer, batch, True)
    off = step_seconds(model, optimizer, batch, False)
    print(f"anomaly detection on: {on:.2f} s/step, off: {off:.2f} s/step, on/off: {on / off:.2f}")


if __name__ == "__main__":
    main()
