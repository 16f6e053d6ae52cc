"""The Markdown key table of a property file, from the file itself: key, default, meaning.

    python -m recbole_kd.tools.config_table RD      # properties/model/RD.yaml
    python -m recbole_kd.tools.config_table overall # properties/overall.yaml

docs/config.md's tables are made from it (and checked against the files by the tests), so the
YAML files stay the one source of each default.
"""

from __future__ import annotations

import argparse
import os
import re

import yaml

from recbole_kd.properties import model_file, properties_dir

# "key: value   # (type) meaning" on one line of a property file.
_LINE = re.compile(r"^(?P<key>\w+):(?P<value>[^#]*)#\s*\((?P<type>[^)]*)\)\s*(?P<meaning>.*)$")


def default_cell(text: str) -> str:
    """A default as the YAML file writes it, for a table cell."""
    return f"`{text.strip() or '~'}`"


def rows(path: str) -> list[tuple[str, str, str]]:
    """(key, default as written, meaning) of every commented top-level key of ``path``."""
    found = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = _LINE.match(line.rstrip("\n"))
            if match:
                found.append((match["key"], match["value"].strip(), match["meaning"].strip()))
    return found


def table(path: str) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {default_cell(value)} | {meaning} |" for key, value, meaning in rows(path)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recbole_kd.tools.config_table",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a method (RD, BD, ...) or overall")
    name = parser.parse_args(argv).name
    path = (os.path.join(properties_dir(), "overall.yaml") if name == "overall"
            else model_file(name))
    print(table(path))


def loaded_default(cell: str):
    """The value a table cell's default stands for (as YAML reads it)."""
    return yaml.safe_load(cell.strip().strip("`"))


if __name__ == "__main__":
    main()
