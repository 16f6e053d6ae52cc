"""The run's split, built once, and loaders over it for any model's config.

RecBole's ``Dataset.build()`` converts the data in place and cannot run twice, so the split is made
once per run and every model trained in it (teacher, student, warm-ups) gets loaders over the
same three parts: none of them can see another split's test items.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from logging import getLogger

import numpy as np
import recbole
import torch
import yaml
from recbole.config import Config
from recbole.data import create_dataset, create_samplers, get_dataloader
from recbole.data.dataloader import UserDataLoader
from recbole.utils import ModelType, init_seed

from recbole_kd import distributed, sharding
from recbole_kd.errors import DataFormatError, KDConfigError, KDConfigWarning
from recbole_kd.model.sequential_backbone import QUERY_FIELD


def build_split(config: Config):
    """(dataset, (train, valid, test) datasets) of ``config``, seeded as RecBole seeds them. A
    sequential split's training rows are numbered from 1 (``kd_query``): they are the queries a
    distillation run keeps state for."""
    check_data_files(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = read_dataset(config)
    getLogger().info(dataset)
    check_leave_one_out(config, dataset)
    warn_duplicates(config, dataset)
    parts = dataset.build()
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        train = parts[0].inter_feat
        train[QUERY_FIELD] = torch.arange(1, len(train) + 1)  # 0 is padding, as user 0 is
    return dataset, parts


def read_dataset(config: Config):
    """RecBole's ``create_dataset``, its failures on files it cannot read said in one line that
    names the data set, and a data set its filters leave empty refused."""
    name = config["dataset"]
    emptied = DataFormatError(
        f"Data set '{name}' holds no interaction once RecBole's filters ran "
        "(user_inter_num_interval, item_inter_num_interval, val_interval, threshold): "
        "loosen them.")
    try:
        dataset = create_dataset(config)
    except ValueError as error:
        if "filtering" in str(error):  # RecBole's "Some feat is empty"
            raise emptied from None
        raise unreadable(config, error) from error
    except (KeyError, IndexError, TypeError) as error:
        raise unreadable(config, error) from error
    if len(dataset.inter_feat) == 0:
        raise emptied
    return dataset


def unreadable(config: Config, error: Exception) -> DataFormatError:
    """The one-line error of a data set RecBole could not read."""
    return DataFormatError(
        f"RecBole could not read data set '{config['dataset']}' in '{config['data_path']}' "
        f"({type(error).__name__}: {str(error)[:200]}): its .inter file needs a header of "
        "typed columns such as 'user_id:token<TAB>item_id:token<TAB>timestamp:float', and "
        "load_col must name columns it has.")


def check_data_files(config: Config) -> None:
    """Refuse a missing data set and empty interaction files, naming them: RecBole fails on them
    deep inside."""
    name = config["dataset"]
    if not os.path.isdir(config["data_path"]) and name not in downloadable_data_sets():
        raise DataFormatError(
            f"No data set '{name}': the folder '{config['data_path']}' does not exist, and "
            f"'{name}' is not one RecBole downloads. Set data_path to the folder that holds "
            f"{name}/{name}.inter, or check the data set's name."
        )
    check_time_field(config)
    parts = config["benchmark_filename"] or [None]
    for part in parts:
        path = os.path.join(config["data_path"], f"{name}.{part}.inter" if part else f"{name}.inter")
        if not os.path.isfile(path):
            continue  # RecBole reports a missing data set itself (or downloads a known one)
        try:
            with open(path, encoding="utf-8") as f:
                header, first_row = f.readline(), f.readline()
        except UnicodeDecodeError as error:
            raise DataFormatError(
                f"'{path}' is not UTF-8 text ({error.reason} at byte {error.start}): save it "
                "as UTF-8.") from None
        if not header.strip() or not first_row.strip():
            raise DataFormatError(
                f"'{path}' holds no interactions: it needs a header line such as "
                "'user_id:token<TAB>item_id:token', then one interaction per line."
            )


def check_time_field(config: Config) -> None:
    """A sequential split orders each user's interactions by time: refuse a run whose
    ``load_col`` leaves the time field out (RecBole fails deep inside, sorting by it)."""
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        return
    columns = (config["load_col"] or {}).get("inter")
    time_field = config["TIME_FIELD"]
    if columns is not None and time_field not in columns:
        raise KDConfigError(
            f"A sequential run orders each user's interactions by '{time_field}', which "
            f"load_col's inter columns {columns} leave out: add it, e.g. load_col: {{inter: "
            f"[{', '.join([*columns, time_field])}]}}.")


def downloadable_data_sets() -> set[str]:
    """The names of the data sets RecBole downloads when they are not on disk."""
    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", "url.yaml")
    with open(path, encoding="utf-8") as f:
        return set(yaml.safe_load(f))


def split_fingerprint(dataset, parts) -> str:
    """A hash of the split's contents: every part's (user, item) tokens, in any order.

    Two runs with the same data set name and settings but other files (another ``data_path``)
    get other fingerprints, so a model trained on one is never taken for the other's.
    """
    digest = hashlib.sha1()
    for field in (dataset.uid_field, dataset.iid_field):
        digest.update("\x1f".join(map(str, dataset.field2id_token[field])).encode())
    for part in parts:
        users = np.asarray(part.inter_feat[dataset.uid_field], dtype=np.int64)
        items = np.asarray(part.inter_feat[dataset.iid_field], dtype=np.int64)
        pairs = np.sort(users * dataset.item_num + items)
        digest.update(len(pairs).to_bytes(8, "little"))
        digest.update(pairs.tobytes())
    return digest.hexdigest()[:16]


def warn_duplicates(config: Config, dataset) -> None:
    """Say when a general data set holds a (user, item) pair more than once and RecBole keeps
    them all (``rm_dup_inter`` unset): the copies can land in training and test both, which
    inflates the metrics. (A sequential data set's repeats are the users' histories.)"""
    if config["rm_dup_inter"] is not None or config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return
    users = np.asarray(dataset.inter_feat[dataset.uid_field], dtype=np.int64)
    items = np.asarray(dataset.inter_feat[dataset.iid_field], dtype=np.int64)
    pairs = users * dataset.item_num + items
    repeated = len(pairs) - len(np.unique(pairs))
    if repeated:
        warnings.warn(
            f"'{config['dataset']}' holds {repeated} repeated (user, item) interactions, which "
            "RecBole keeps (rm_dup_inter unset): a copy may be trained on and tested on. Set "
            "rm_dup_inter: first (or last) to keep one.", KDConfigWarning, stacklevel=2)


def check_leave_one_out(config: Config, dataset) -> None:
    """Leave-one-out needs 3 interactions per user (train, validation, test): RecBole would
    silently leave shorter users out of validation, or of evaluation altogether. (A sequential
    data set's rows are a user's interactions but the first, each with its history.)"""
    split = (config["eval_args"] or {}).get("split") or {}
    if split.get("LS") != "valid_and_test" or config["benchmark_filename"]:
        return
    counts = np.bincount(np.asarray(dataset.inter_feat[dataset.uid_field]), minlength=dataset.user_num)
    rows_needed = 2 if config["MODEL_TYPE"] == ModelType.SEQUENTIAL else 3
    short = int(((counts > 0) & (counts < rows_needed)).sum())
    if short:
        raise KDConfigError(
            f"{short} users of '{config['dataset']}' have fewer than 3 interactions, too few for "
            "leave-one-out (eval_args split LS: valid_and_test) to give each a training, a "
            'validation and a test item. Filter them with user_inter_num_interval: "[3,inf)".'
        )


def make_loaders(config: Config, dataset, parts, run_config: Config | None = None,
                 user_batches: bool = False) -> tuple:
    """Train, valid and test loaders of ``config`` (batch sizes, negative sampling) over ``parts``;
    in a distributed run sharded by the users' blocks of ``run_config`` (default ``config``),
    the run a model trained alone (a derived config) belongs to. With ``user_batches`` the
    training batches are of users, as RecBole trains CDAE."""
    train_part, valid_part, test_part = parts
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, parts)
    train_loader = UserDataLoader if user_batches else get_dataloader(config, "train")
    with distributed.single_process_view(config):  # RecBole's shards are not by user
        train = train_loader(config, train_part, train_sampler, shuffle=config["shuffle"])
        valid = get_dataloader(config, "valid")(config, valid_part, valid_sampler, shuffle=False)
        test = get_dataloader(config, "test")(config, test_part, test_sampler, shuffle=False)
    if distributed.is_distributed():
        blocks = sharding.user_blocks(train_part, (run_config or config)["kd_chunk_size"])
        train = sharding.train_shard(train, blocks)
        valid, test = (sharding.evaluation_shard(loader, blocks[distributed.rank()])
                       for loader in (valid, test))
    return train, valid, test
