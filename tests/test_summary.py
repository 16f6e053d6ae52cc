"""The end-of-run summary reads at a glance: each model's metric and its gain."""

from __future__ import annotations

from recbole_kd.summary import format_summary


def test_summary_lists_each_model_with_its_gain():
    config = {"valid_metric": "NDCG@10", "model": "BD", "teacher_model": "BPR",
              "teacher_config": {"embedding_size": 200}, "student_model": "BPR",
              "student_config": {"embedding_size": 20}}
    result = {
        "teacher_alone_test_result": {"ndcg@10": 0.2},
        "student_alone_test_result": {"ndcg@10": 0.1},
        "teacher_test_result": {"ndcg@10": 0.21},
        "test_result": {"ndcg@10": 0.125},
    }
    lines = format_summary(config, result).splitlines()
    assert lines[0] == "Summary, test ndcg@10:"
    assert "BPR(embedding_size=200)" in lines[1] and lines[1].endswith("0.2000")
    assert lines[3].endswith("0.2100  (x1.050 vs teacher alone)")
    assert lines[4].startswith("  BD student") and lines[4].endswith("(x1.250 vs student alone)")
