"""Random bad values for each kind of input field, given on the command line: the outcome is
always a one-line error with exit status 2, or a run that finishes; never a traceback. The error
catalogue lists the known cases; this test looks for the ones nobody listed."""

from __future__ import annotations

import random

import pytest

from recbole_kd import cli
from tests.test_error_catalogue import small_args

# Fields of every kind a user sets: counts, rates, weights, temperatures, sizes, names, lists,
# dicts, seeds, paths.
FIELDS = ["epochs", "train_batch_size", "eval_batch_size", "learning_rate", "weight_decay",
          "stopping_step", "eval_step", "seed", "topk", "metrics", "valid_metric", "eval_args",
          "teacher_config", "student_config", "teacher_model", "rrd_weight", "rrd_top_n",
          "rrd_temperature", "de_weight", "de_tau_start", "de_num_experts", "kd_chunk_size",
          "kd_eval_protocol", "kd_resume", "teacher_checkpoint", "init_std", "MAX_ITEM_LIST_LENGTH",
          "user_inter_num_interval", "load_col", "kd_deterministic"]
# Bad values of every type: signs, zeros, huge and non-finite numbers, wrong types, empty and
# odd strings, nested containers.
VALUES = ["-1", "0", "1e999", "-1e999", "nan", "1e12", "3.5", "True", "None", "''", "'x'",
          "'caf\u00e9'", "[]", "[0]", "[-3, 'a']", "{}", "{'embedding_size': -2}",
          "{'nope': 1}", "'../../etc'", "'[1,'", "{'split': {'RS': [1, 1, -1]}}", "2**40"]


def cases(count: int = 40, seed: int = 7) -> list[tuple[str, str]]:
    draw = random.Random(seed)
    return sorted({(draw.choice(FIELDS), draw.choice(VALUES)) for _ in range(count)})


@pytest.mark.parametrize("field,value", cases())
def test_a_bad_value_is_a_one_line_error_or_a_finished_run(small_data, capsys, field, value):
    argv = [*small_args(small_data), f"--{field}={value}"]
    try:
        cli.main(argv)
        finished = True
    except SystemExit as stop:
        finished = False
        assert stop.code == 2, (field, value, stop.code)
    error = capsys.readouterr().err
    assert "Traceback" not in error, (field, value, error[-2000:])
    if not finished:
        lines = [line for line in error.splitlines() if ": error: " in line]
        assert len(lines) == 1, (field, value, error[-2000:])
