"""The converters of the papers' data formats to RecBole atomic files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from recbole.data import create_dataset

from recbole_kd.config import KDConfig
from recbole_kd.data import build_split
from recbole_kd.properties import properties_dir
from recbole_kd.tools.convert import (
    DataFormatError,
    convert_fixed_split,
    convert_users_dat,
    main,
)

CITEULIKE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "citeulike-t")
USERS_DAT = os.path.join(CITEULIKE, "users.dat")
DERRD_SPLIT = os.path.join(CITEULIKE, "derrd-loo")
SPLIT_CONFIG = os.path.join(properties_dir(), "datasets", "citeulike-t-loo.yaml")


def read_inter(path: str) -> list[tuple[str, str]]:
    """The (user, item) rows of an atomic .inter file, header checked."""
    with open(path, encoding="utf-8") as file:
        assert file.readline() == "user_id:token\titem_id:token\n"
        return [tuple(line.rstrip("\n").split("\t")) for line in file]


def write_lines(path, lines: list[str]) -> str:
    with open(path, "w", encoding="utf-8") as file:
        file.write("".join(f"{line}\n" for line in lines))
    return str(path)


def load_split(data_path: str, name: str):
    """(dataset, (train, valid, test)) of benchmark files ``name`` as a BPR run loads them."""
    config = KDConfig(
        "BPR", name, [SPLIT_CONFIG], {"data_path": data_path, "state": "ERROR", "seed": 2020}
    )
    return build_split(config)


def pairs_of(dataset, part) -> set[tuple[str, str]]:
    users = dataset.id2token(dataset.uid_field, part.inter_feat[dataset.uid_field].numpy())
    items = dataset.id2token(dataset.iid_field, part.inter_feat[dataset.iid_field].numpy())
    return set(zip(users.tolist(), items.tolist()))


def per_user_counts(dataset, part) -> np.ndarray:
    """Interactions of each real user (padding id 0 left out) in ``part``."""
    users = part.inter_feat[dataset.uid_field].numpy()
    return np.bincount(users, minlength=dataset.user_num)[1:]


def test_counts_are_not_items(tmp_path):
    # Every count is also a valid item id elsewhere in the file: none may become an interaction.
    users_dat = write_lines(tmp_path / "users.dat", ["3 1 2 4", "2 3 5", "4 2 3 4 5", "1 3"])
    folder = convert_users_dat(users_dat, str(tmp_path / "out"), name="toy", min_items=1)
    assert folder == str(tmp_path / "out" / "toy")
    assert read_inter(os.path.join(folder, "toy.inter")) == [
        ("0", "1"), ("0", "2"), ("0", "4"),
        ("1", "3"), ("1", "5"),
        ("2", "2"), ("2", "3"), ("2", "4"), ("2", "5"),
        ("3", "3"),
    ]  # fmt: skip


def test_min_items_filter_numbers_kept_users(tmp_path):
    users_dat = write_lines(tmp_path / "users.dat", ["3 1 2 4", "2 3 5", "4 2 3 4 5", "1 3"])
    folder = convert_users_dat(users_dat, str(tmp_path), name="toy", min_items=3)
    rows = read_inter(os.path.join(folder, "toy.inter"))
    # Lines 1 and 3 survive and become users 0 and 1 (the DE-RRD split's numbering).
    assert rows == [
        ("0", "1"),
        ("0", "2"),
        ("0", "4"),
        ("1", "2"),
        ("1", "3"),
        ("1", "4"),
        ("1", "5"),
    ]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("3 7 8", "line 2: count 3 but 2 items follow"),
        ("x 7 8", "line 2: the count 'x'"),
        ("", "line 2: empty"),
    ],
)
def test_malformed_users_dat_names_the_line(tmp_path, bad_line, message):
    users_dat = write_lines(tmp_path / "users.dat", ["2 1 2", bad_line, "1 3"])
    with pytest.raises(DataFormatError, match=message):
        convert_users_dat(users_dat, str(tmp_path), min_items=1)


def test_fixed_split_loads_in_recbole(tmp_path):
    split = tmp_path / "split"
    split.mkdir()
    write_lines(split / "train.tsv", ["user\titem", "a\tx", "a\ty", "b\ty", "c\tz"])
    write_lines(split / "valid.tsv", ["user\titem", "a\tz", "b\tx", "c\ty"])
    # Item w appears only in test: RecBole's joint remapping must still give it an id.
    write_lines(split / "test.tsv", ["user\titem", "a\tw", "b\tz", "c\tx"])
    main(["fixed-split", str(split), str(tmp_path / "data"), "--name", "tiny-loo"])
    dataset, (train, valid, test) = load_split(str(tmp_path / "data"), "tiny-loo")
    assert (dataset.user_num, dataset.item_num) == (4, 5)  # padding included
    assert pairs_of(dataset, train) == {("a", "x"), ("a", "y"), ("b", "y"), ("c", "z")}
    assert pairs_of(dataset, valid) == {("a", "z"), ("b", "x"), ("c", "y")}
    assert pairs_of(dataset, test) == {("a", "w"), ("b", "z"), ("c", "x")}


def test_fixed_split_rejects_bad_header(tmp_path):
    for part in ("train", "valid", "test"):
        write_lines(tmp_path / f"{part}.tsv", ["uid\titem", "0\t1"])
    with pytest.raises(DataFormatError, match="train.tsv, line 1: header"):
        convert_fixed_split(str(tmp_path), str(tmp_path / "out"))


@pytest.mark.skipif(not os.path.isfile(USERS_DAT), reason="shared CiteULike-t data absent")
def test_real_users_dat_matches_the_papers(tmp_path):
    folder = convert_users_dat(USERS_DAT, str(tmp_path))
    rows = read_inter(os.path.join(folder, "citeulike-t.inter"))
    assert len(rows) == 125_580
    assert len({user for user, _ in rows}) == 5_219
    assert len({item for _, item in rows}) == 25_181


@pytest.mark.skipif(not os.path.isdir(DERRD_SPLIT), reason="shared DE-RRD split absent")
def test_real_split_loads_with_one_valid_and_one_test_item_per_user(tmp_path):
    convert_fixed_split(DERRD_SPLIT, str(tmp_path))
    dataset, (train, valid, test) = load_split(str(tmp_path), "citeulike-t-loo")
    assert (dataset.user_num, dataset.item_num) == (5_219 + 1, 25_181 + 1)
    assert len(train) == 115_142
    assert (per_user_counts(dataset, valid) == 1).all()
    assert (per_user_counts(dataset, test) == 1).all()
    assert (per_user_counts(dataset, train) >= 3).all()


@pytest.mark.skipif(
    not (os.path.isfile(USERS_DAT) and os.path.isdir(DERRD_SPLIT)), reason="shared data absent"
)
def test_split_partitions_the_converted_users_dat(tmp_path):
    # Same users (kept-line index) in both; the split's items map back through item_ids.tsv.
    convert_users_dat(USERS_DAT, str(tmp_path), min_items=5)
    convert_fixed_split(DERRD_SPLIT, str(tmp_path))
    with open(os.path.join(DERRD_SPLIT, "item_ids.tsv"), encoding="utf-8") as file:
        next(file)
        raw_item = dict(line.split() for line in file)
    split_rows = []
    for part in ("train", "valid", "test"):
        path = os.path.join(tmp_path, "citeulike-t-loo", f"citeulike-t-loo.{part}.inter")
        split_rows += [(user, raw_item[item]) for user, item in read_inter(path)]
    full_rows = read_inter(os.path.join(tmp_path, "citeulike-t", "citeulike-t.inter"))
    assert len(split_rows) == len(full_rows)
    assert set(split_rows) == set(full_rows)


def test_users_dat_loads_in_recbole(tmp_path):
    users_dat = write_lines(tmp_path / "users.dat", ["3 1 2 4", "2 3 5", "4 2 3 4 5", "1 3"])
    main(["users-dat", users_dat, str(tmp_path / "data"), "--name", "toy", "--min-items", "2"])
    config = KDConfig(
        "BPR", "toy", config_dict={"data_path": str(tmp_path / "data"), "state": "ERROR"}
    )
    dataset = create_dataset(config)
    assert (dataset.user_num, dataset.item_num, dataset.inter_num) == (4, 6, 9)
