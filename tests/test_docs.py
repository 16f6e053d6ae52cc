"""The documentation's relative links resolve, and the README stays a landing page."""

from __future__ import annotations

import glob
import os
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 200

DOC_FILES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "results").glob("*.md")]
)

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
MARKUP_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its rendered text, lowercased, with characters other than
    letters, digits, marks, connector punctuation, spaces and hyphens removed, spaces as hyphens."""
    text = MARKUP_LINK.sub(r"\1", heading).replace("`", "").replace("*", "")
    text = text.strip().lower()
    kept = [
        c for c in text
        if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc"
    ]
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of ``path``, with GitHub's -1, -2 suffixes for repeated ones."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # http:, https:, mailto: ...
            links.append(target)
    return links


def test_doc_files_found():
    names = {p.relative_to(ROOT).as_posix() for p in DOC_FILES}
    assert "README.md" in names
    assert any(name.startswith("docs/") for name in names)
    assert any(name.startswith("results/") for name in names)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path):
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
            continue
        if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading with anchor #{anchor} in {linked.name}")
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("2. Distillation Experts (DE)", "2-distillation-experts-de"),
        ("DE's cost", "des-cost"),
        ("The DE-RRD protocol (`fixed_sampled`)", "the-de-rrd-protocol-fixed_sampled"),
        ("Scale: BD's rank refresh, 3 seeds", "scale-bds-rank-refresh-3-seeds"),
        ("BD on ml-100k (BPR-200 ↔ BPR-20)", "bd-on-ml-100k-bpr-200--bpr-20"),
    ],
)
def test_slug_follows_github(heading: str, anchor: str):
    assert slug(heading) == anchor


def test_config_reference_lists_every_key_with_its_yaml_default():
    """docs/config.md agrees with the property files, the one source of each default."""
    from recbole_kd.key_checks import KEY_RULES, VALUE_RULES
    from recbole_kd.properties import plugin_keys, properties_dir, read_yaml
    from recbole_kd.tools.config_table import loaded_default

    with open(os.path.join(ROOT, "docs", "config.md"), encoding="utf-8") as f:
        cells = dict(re.findall(r"^\| `(\w+)` \| (`[^|]*`) \|", f.read(), flags=re.MULTILINE))
    files = [os.path.join(properties_dir(), "overall.yaml")]
    files += sorted(glob.glob(os.path.join(properties_dir(), "model", "*.yaml")))
    for path in files:
        for key, value in read_yaml(path).items():
            if key in plugin_keys():
                assert key in cells, f"{key} of {path} is missing from docs/config.md"
                assert loaded_default(cells[key]) == value, key
    # every key defined has a value check: the backbone keys' are also applied in role configs
    assert set(KEY_RULES) | (set(VALUE_RULES) & plugin_keys()) == set(plugin_keys())
    assert not set(KEY_RULES) & set(VALUE_RULES)
