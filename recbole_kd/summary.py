"""The end-of-run summary: teacher, student alone and distilled models side by side."""

from __future__ import annotations


def _describe(config, role: str) -> str:
    # RecBole's Config has no get(); the summary also takes a plain dict.
    teachers = config["teachers"] if "teachers" in config else None  # noqa: SIM401
    if role == "teacher" and teachers is not None:
        members = ", ".join(_model(spec["model"], spec.get("config")) for spec in teachers)
        return f"Ensemble({members})"
    return _model(config[f"{role}_model"], config[f"{role}_config"])


def _model(name: str, overrides: dict | None) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in (overrides or {}).items())
    return f"{name}({settings})"


def format_summary(config, result: dict) -> str:
    """A few lines a person reads at a glance: the valid metric on test, with relative gains."""
    metric = config["valid_metric"].lower()
    rows = []  # (label, model, value, reference value, reference label)

    def add(label, role, key, reference_key=None, reference_label=""):
        if key in result and result[key] is not None:
            reference = result.get(reference_key) if reference_key else None
            rows.append((label, _describe(config, role), result[key][metric],
                         reference[metric] if reference else None, reference_label))

    add("teacher alone", "teacher", "teacher_alone_test_result")
    add("student alone", "student", "student_alone_test_result")
    name = config["model"]
    add(f"{name} teacher", "teacher", "teacher_test_result", "teacher_alone_test_result",
        "teacher alone")
    add(f"{name} student", "student", "test_result", "student_alone_test_result", "student alone")
    width = max(len(row[0]) for row in rows)
    model_width = max(len(row[1]) for row in rows)
    lines = [f"Summary, test {metric}:"]
    for label, model, value, reference, reference_label in rows:
        gain = f"  (x{value / reference:.3f} vs {reference_label})" if reference else ""
        lines.append(f"  {label:<{width}}  {model:<{model_width}}  {value:.4f}{gain}")
    return "\n".join(lines)
