"""Shared helpers of the benchmark scripts: one timed run, and Markdown tables."""

from __future__ import annotations

from recbole_kd.tools.compare import timed_run  # noqa: F401  (the benchmarks' one timed run)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
