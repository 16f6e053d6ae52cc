"""Each run of a process logs into its own file (RecBole's logger is set up once per process)."""

from __future__ import annotations

import glob
import logging

from recbole_kd.run_log import MARK, init_run_logger
from tests.conftest import make_config


def test_a_second_run_of_a_process_logs_into_its_own_file(small_data, workdir, monkeypatch):
    root = logging.getLogger()
    theirs = logging.NullHandler()  # a handler someone else installed stays
    monkeypatch.setattr(root, "handlers", [theirs])  # a fresh process: no pytest handlers
    for model in ("BPR", "RRD"):
        init_run_logger(make_config(model, small_data, state="INFO"))
        logging.getLogger().info(f"line of the {model} run")
    ours = [h for h in root.handlers if getattr(h, MARK, False)]
    assert theirs in root.handlers and len(ours) == 2  # one console and one file handler
    for handler in ours:
        handler.close()
    for model, other in (("BPR", "RRD"), ("RRD", "BPR")):
        (path,) = glob.glob(f"log/{model}/*.log")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert f"line of the {model} run" in text and f"line of the {other} run" not in text
