"""Command line for recbole_kd, in the style of RecBole's run_recbole.py: ``recbole-kd`` (the
installed command), ``python -m recbole_kd`` and the repository's ``run_recbole_kd.py`` are it.

    python run_recbole_kd.py                                  # DERRD on ml-100k, BPR-200 -> BPR-20
    python run_recbole_kd.py -m RRD -d ml-100k --config_files lightgcn-bpr
    python run_recbole_kd.py -m BPR -d ml-100k --embedding_size=20   # a RecBole baseline
    python run_recbole_kd.py -m DERRD --hyper DERRD.hyper     # RecBole's HyperTuning
    python run_recbole_kd.py --compare -d ml-100k --config_files bpr200-bpr20 --seeds 3
    python run_recbole_kd.py -m RRD --nproc 2                 # two processes (gloo on CPU)

Any other ``--key=value`` reaches RecBole's config (e.g. ``--epochs=50 --teacher_checkpoint=...``).
A config file that is not a path is looked up among the shipped pair files (properties/pairs), a
params file among properties/hyper.
"""

from __future__ import annotations

import argparse
import re
import sys

from recbole_kd.errors import KDConfigError, user_errors
from recbole_kd.properties import pair_file, parse_settings, resolve_config_files, shipped_file
from recbole_kd.quick_start import run_recbole_kd
from recbole_kd.tools import compare


def parser(prog: str = "run_recbole_kd.py") -> argparse.ArgumentParser:
    # No abbreviations: --seed (a RecBole key) must not be taken for --seeds.
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--model", "-m", type=str, default="DERRD", help="model name")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="data set name")
    parser.add_argument(
        "--config_files", type=str, default=None, help="config files, separated by spaces"
    )
    parser.add_argument("--hyper", type=str, default=None, help="HyperTuning params file")
    parser.add_argument("--algo", type=str, default="exhaustive", help="exhaustive|random|bayes")
    parser.add_argument("--max_evals", type=int, default=100, help="trials (random, bayes)")
    parser.add_argument("--output_file", type=str, default=None, help="tuning results file")
    parser.add_argument("--compare", action="store_true", help="baselines and KD side by side")
    parser.add_argument("--seeds", type=int, default=1, help="--compare: seeds (mean ± std)")
    parser.add_argument("--baselines", type=str, default=None,
                        help="--compare: RecBole baselines besides the pair's two models, "
                             "separated by commas (default: "
                             f"{','.join(compare.DEFAULT_BASELINES)}; for a sequential pair "
                             f"{','.join(compare.DEFAULT_SEQUENTIAL_BASELINES)})")
    parser.add_argument("--methods", type=str, default=",".join(compare.DEFAULT_METHODS),
                        help="--compare: distillation methods")
    parser.add_argument("--results", type=str, default=compare.DEFAULT_RESULTS,
                        help="--compare: output folder")
    parser.add_argument("--tune", type=int, default=0,
                        help="--compare: N trials of HyperTuning per contender, on validation")
    parser.add_argument("--set", nargs="*", default=[],
                        help="key=value settings (the same as --key=value)")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines")
    parser.add_argument("--ip", type=str, default="localhost", help="rank 0's machine")
    parser.add_argument("--port", type=str, default="5678", help="rank 0's port")
    parser.add_argument("--group_offset", type=int, default=0,
                        help="rank of this machine's first process")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (or set RECBOLE_KD_DEBUG=1)")
    return parser


def key_value_args(tokens: list[str]) -> dict[str, str]:
    """The ``--key=value`` settings among the command line's other arguments; anything else is
    refused (RecBole would ignore it without a word)."""
    odd = [token for token in tokens if not (token.startswith("--") and "=" in token)]
    if odd:
        raise KDConfigError(
            f"Unrecognised argument(s) {' '.join(odd)}: settings are written --key=value "
            "(e.g. --epochs=50); see python run_recbole_kd.py --help."
        )
    return parse_settings([token[2:] for token in tokens])


def names(listed: str) -> list[str]:
    """Model names separated by commas or spaces ("RRD,BD" or "RRD BD")."""
    return [name for name in re.split(r"[,\s]+", listed) if name]


def run_compare(args, config_files, settings: dict) -> None:
    pair = config_files[0] if config_files else pair_file("bpr200-bpr20")
    table = compare.compare(
        args.dataset, pair, seeds=args.seeds,
        baselines=None if args.baselines is None else names(args.baselines),
        methods=names(args.methods),
        config_files=config_files[1:] if config_files else None,
        results_dir=args.results, settings=settings, tune=args.tune,
    )
    print(table)


def main(argv: list[str] | None = None, prog: str = "run_recbole_kd.py") -> None:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); errors are printed as
    ``<prog>: error: …``."""
    args, rest = parser(prog).parse_known_args(sys.argv[1:] if argv is None else argv)
    with user_errors(prog, args.debug):
        settings = {**key_value_args(rest), **parse_settings(args.set)}
        # The settings reach RecBole as a config dict (converted as it converts the command
        # line), so RecBole must not read the command line again.
        sys.argv = sys.argv[:1]
        config_files = resolve_config_files(args.config_files)
        if (args.compare or args.hyper) and (args.nproc != 1 or args.world_size > 0):
            raise KDConfigError("--nproc and --world_size apply to one run: run --compare and "
                                "--hyper in one process.")
        if args.compare:
            run_compare(args, config_files, settings)
        elif args.hyper:
            from recbole_kd.tuning import tune

            tune(args.model, args.dataset, shipped_file(args.hyper, "hyper"), config_files,
                 algo=args.algo, max_evals=args.max_evals, output_file=args.output_file,
                 config_dict=settings)
        else:
            run_recbole_kd(model=args.model, dataset=args.dataset, config_file_list=config_files,
                           config_dict=settings, nproc=args.nproc, world_size=args.world_size,
                           ip=args.ip, port=args.port, group_offset=args.group_offset)



def entry_point() -> None:
    """The installed ``recbole-kd`` command."""
    main(prog="recbole-kd")
