"""RecBole atomic files from the data formats of the DE-RRD and BD papers (CiteULike-t).

Two converters, both writing ``user_id:token`` / ``item_id:token`` interaction files that RecBole
loads with ``dataset: <name>`` and ``data_path: <out_dir>``:

- :func:`convert_users_dat`: the public ``users.dat`` (one line per user: a count N, then N item
  ids) -> ``<name>.inter``, split by RecBole at run time.
- :func:`convert_fixed_split`: the DE-RRD authors' fixed leave-one-out split (``train.tsv``,
  ``valid.tsv``, ``test.tsv``) -> RecBole benchmark files ``<name>.{train,valid,test}.inter``, read
  with ``benchmark_filename: [train, valid, test]`` (``properties/datasets/citeulike-t-loo.yaml``).

User tokens agree between the two: :func:`convert_users_dat` numbers users by their index among
the kept lines, the numbering of the DE-RRD split. Item tokens differ: ``users.dat`` ids are kept
as they are, the split's items were renumbered by the authors (their ``item_ids.tsv`` maps back).

Command line::

    python -m recbole_kd.tools.convert users-dat <users.dat> <out_dir> [--name N] [--min-items K]
    python -m recbole_kd.tools.convert fixed-split <split_dir> <out_dir> [--name N]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Iterator

from recbole_kd.errors import DataFormatError, user_errors

INTER_HEADER = "user_id:token\titem_id:token\n"
SPLIT_PARTS = ("train", "valid", "test")
SPLIT_HEADER = ["user", "item"]


def read_users_dat(users_dat: str) -> Iterator[list[str]]:
    """Yield the item tokens of each line (user) of ``users_dat``, in file order.

    The leading count is checked against the number of items that follow and then dropped: it is
    not an item (the BD authors' preprocessing read it as one, adding ~5.2k spurious
    interactions to CiteULike-t).
    """
    _check_exists(users_dat)
    with open(users_dat, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            fields = line.split()
            if not fields:
                raise DataFormatError(f"{users_dat}, line {line_number}: empty line")
            try:
                count = int(fields[0])
            except ValueError:
                raise DataFormatError(
                    f"{users_dat}, line {line_number}: the count {fields[0]!r} is not an integer"
                ) from None
            items = fields[1:]
            if count != len(items):
                raise DataFormatError(
                    f"{users_dat}, line {line_number}: count {count} but {len(items)} items follow"
                )
            yield items


def convert_users_dat(
    users_dat: str, out_dir: str, name: str = "citeulike-t", min_items: int = 5
) -> str:
    """Write ``<out_dir>/<name>/<name>.inter`` from ``users_dat`` and return that folder.

    Users with fewer than ``min_items`` items are dropped (both papers use 5). A kept user's token
    is its 0-based index among the kept lines, in file order: the user ids of the DE-RRD split.
    Item tokens are the ids written in ``users_dat``. Interactions are written in file order,
    repeated items included (none in CiteULike-t).
    """
    check_name(out_dir, name)
    kept = [items for items in read_users_dat(users_dat) if len(items) >= min_items]
    if not kept:
        raise DataFormatError(
            f"{users_dat}: no user has {min_items} or more items, so nothing would be written. "
            "Lower --min-items."
        )
    folder = _dataset_folder(out_dir, name)
    rows = ((str(user), item) for user, items in enumerate(kept) for item in items)
    _write_inter(os.path.join(folder, f"{name}.inter"), rows)
    return folder


def read_split_file(path: str) -> list[list[str]]:
    """The (user, item) rows of one split file: tab separated, with the header ``user<TAB>item``."""
    _check_exists(path)
    with open(path, encoding="utf-8") as file:
        header = file.readline().rstrip("\r\n").split("\t")
        if header != SPLIT_HEADER:
            raise DataFormatError(f"{path}, line 1: header {header} is not {SPLIT_HEADER}")
        rows = []
        for line_number, line in enumerate(file, start=2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 2 or not all(fields):
                raise DataFormatError(f"{path}, line {line_number}: expected 'user<TAB>item'")
            rows.append(fields)
    return rows


def convert_fixed_split(split_dir: str, out_dir: str, name: str = "citeulike-t-loo") -> str:
    """Write RecBole benchmark files ``<name>.{train,valid,test}.inter`` from the ``train.tsv``,
    ``valid.tsv`` and ``test.tsv`` of ``split_dir``; return the dataset folder.

    Ids are kept as tokens: RecBole remaps them jointly over the three files, so an item seen only
    in valid or test still gets an id (and no training interaction).
    """
    check_name(out_dir, name)
    parts = {part: read_split_file(os.path.join(split_dir, f"{part}.tsv")) for part in SPLIT_PARTS}
    for part, rows in parts.items():
        if not rows:
            raise DataFormatError(f"{os.path.join(split_dir, part + '.tsv')}: no interactions.")
    folder = _dataset_folder(out_dir, name)
    for part, rows in parts.items():
        _write_inter(os.path.join(folder, f"{name}.{part}.inter"), rows)
    return folder


def _write_inter(path: str, rows: Iterable) -> None:
    """An atomic file of (user, item) token rows, written whole or not at all."""
    with open(path + ".partial", "w", encoding="utf-8") as out:
        out.write(INTER_HEADER)
        out.writelines(f"{user}\t{item}\n" for user, item in rows)
    os.replace(path + ".partial", path)


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise DataFormatError(f"'{path}' does not exist: check the path.")


def check_name(out_dir: str, name: str) -> None:
    """Refuse a data set name that is not a plain folder name: the files must stay inside
    ``out_dir``."""
    if not name or name in (".", "..") or os.path.basename(name) != name or "/" in name:
        raise DataFormatError(
            f"--name '{name}' must be a plain data set name (no folders, no '..'): the files "
            f"go to <out_dir>/<name>/, inside '{out_dir}'.")


def _dataset_folder(out_dir: str, name: str) -> str:
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_kd.tools.convert", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    users = commands.add_parser("users-dat", help="users.dat -> <name>.inter")
    users.add_argument("users_dat")
    users.add_argument("out_dir")
    users.add_argument("--name", default="citeulike-t")
    users.add_argument("--min-items", type=int, default=5, help="drop users with fewer items")
    split = commands.add_parser("fixed-split", help="train/valid/test.tsv -> benchmark files")
    split.add_argument("split_dir")
    split.add_argument("out_dir")
    split.add_argument("--name", default="citeulike-t-loo")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    with user_errors("convert", args.debug):
        if args.command == "users-dat":
            folder = convert_users_dat(args.users_dat, args.out_dir, args.name, args.min_items)
        else:
            folder = convert_fixed_split(args.split_dir, args.out_dir, args.name)
    print(f"Wrote {folder}: run with dataset={args.name}, data_path={args.out_dir}")


if __name__ == "__main__":
    main()
