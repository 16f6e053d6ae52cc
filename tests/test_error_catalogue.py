"""Every bad input of docs/troubleshooting.md's error table, given on the command line: one line
naming the key or file, exit status 2, no traceback, and nothing under saved/ removed or changed.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import run_recbole_kd
from recbole_kd.tools import convert, rank_comparison
from tests.conftest import REPOSITORY, digests, working_in

DOCS = os.path.join(REPOSITORY, "docs", "troubleshooting.md")


def small_args(small_data: str, model: str = "DERRD") -> list[str]:
    """A one-epoch run of ``model`` on the small data, as command-line settings."""
    args = ["-m", model, "-d", "ml-small", f"--data_path={small_data}", "--epochs=1",
            "--show_progress=False", "--state=ERROR", "--eval_batch_size=409600",
            "--seed=2020", "--teacher_config={'embedding_size': 32}",
            "--student_config={'embedding_size': 8}"]
    if model in ("RRD", "DERRD"):
        args += ["--rrd_top_n=50", "--rrd_interesting=5", "--rrd_uninteresting=5"]
    if model in ("DE", "DERRD"):
        args += ["--de_num_experts=4"]
    return args


@dataclass
class Case:
    """One bad input: how to call the tool, and what its one-line error must say."""

    argv: Callable[[dict], list[str]]  # from the fixtures' paths to the arguments
    message: str  # a regular expression the error line must match
    tool: Callable = run_recbole_kd.main


def kd(*extra: str, model: str = "DERRD") -> Callable[[dict], list[str]]:
    return lambda paths: [*small_args(paths["data"], model), *(e.format(**paths) for e in extra)]


CASES: dict[str, Case] = {
    "unknown-model": Case(lambda p: [*small_args(p["data"]), "-m", "DERD"], "Unknown model 'DERD'"),
    "unknown-teacher": Case(kd("--teacher_model=BRP"), "Unknown model 'BRP' for teacher_model"),
    "sequential-student": Case(kd("--student_model=SASRec"),
                               "teacher_model BPR is a general .* student_model SASRec is a "
                               "sequential one"),
    "sequential-feature-model": Case(kd("--student_model=SASRecF", "--teacher_model=SASRec"),
                                     "'SASRecF' needs item features"),
    "sequential-without-time": Case(kd("--student_model=SASRec", "--teacher_model=SASRec"),
                                    "orders each user's interactions by 'timestamp', which "
                                    "load_col's inter columns"),
    "sequential-fixed-sampled": Case(kd("--student_model=SASRec", "--teacher_model=SASRec",
                                        "--kd_eval_protocol=fixed_sampled"),
                                     "kd_eval_protocol: fixed_sampled .* sequential run"),
    "user-row-teacher": Case(kd("--teacher_model=DiffRec"), "trained on whole user rows"),
    "no-representations": Case(kd("--teacher_model=DMF", model="DE"),
                               "DE needs user and item representations"),
    "negative-weight": Case(kd("--de_weight=-1"), "'de_weight' = -1 is invalid"),
    "temperature-zero": Case(kd("--de_tau_start=0"), "'de_tau_start' = 0 is invalid"),
    "bd-temperature": Case(kd("--bd_tau=-1.0", model="BD"), "'bd_tau' = -1.0 is invalid"),
    "interesting-above-top-n": Case(kd("--rrd_interesting=60"), "rrd_interesting=60"),
    "top-n-above-catalogue": Case(kd("--rrd_top_n=100000"), "rrd_top_n=100000"),
    "misspelled-plugin-key": Case(kd("--rrd_wieght=0.1"), "Did you mean 'rrd_weight'"),
    "another-methods-key": Case(kd("--student_checkpoint=x.pth"),
                                "'student_checkpoint' belongs to BD, not to DERRD"),
    "epochs-zero": Case(kd("--epochs=0"), "'epochs' = 0 is invalid"),
    "batch-size-zero": Case(kd("--train_batch_size=0"), "'train_batch_size' = 0 is invalid"),
    "negative-learning-rate": Case(kd("--learning_rate=-0.1"), "'learning_rate' = -0.1"),
    "role-config-value": Case(kd("--teacher_config={{'embedding_size': 0}}"),
                              "'teacher_config.embedding_size' = 0 is invalid"),
    "role-config-misspelled-key": Case(kd("--teacher_config={{'embeding_size': 64}}"),
                                       "'teacher_config.embeding_size' is not a setting .* "
                                       "Did you mean 'embedding_size'"),
    "negative-layers": Case(kd("--teacher_model=LightGCN", "--teacher_config={{'n_layers': -1}}"),
                            "'teacher_config.n_layers' = -1 is invalid"),
    "dropout-above-one": Case(kd("--teacher_model=NeuMF", "--teacher_config={{'dropout_prob': 1.5}}"),
                              "'teacher_config.dropout_prob' = 1.5 is invalid"),
    "seed-out-of-range": Case(kd("--seed=-1"), "'seed' = -1 is invalid"),
    "infinite-learning-rate": Case(kd("--learning_rate=1e999"), "'learning_rate' = inf is invalid"),
    "unknown-metric": Case(kd("--metrics=['Recal']"), "no metric named 'Recal'. Did you mean"),
    "valid-metric-not-computed": Case(kd("--valid_metric=MRR@10", "--metrics=['Recall','NDCG']"),
                                      "valid_metric 'MRR@10' is not among metrics"),
    "valid-metric-cutoff": Case(kd("--valid_metric=NDCG@20"), "cut-off 20, which topk"),
    "negative-split-ratio": Case(kd("--eval_args={{'split': {{'RS': [0.8, -0.1, 0.3]}}}}"),
                                 "split RS \\[0.8, -0.1, 0.3\\]: ratios must be >= 0"),
    "nproc-above-cores": Case(kd("--nproc=512"), "--nproc 512: this machine has"),
    "missing-teacher-checkpoint": Case(kd("--teacher_checkpoint=nowhere.pth"),
                                       "teacher_checkpoint 'nowhere.pth' does not exist"),
    "corrupt-teacher-checkpoint": Case(kd("--teacher_checkpoint={text}"), "could not be read"),
    "foreign-teacher-checkpoint": Case(kd("--teacher_checkpoint={foreign}"),
                                       "is not a RecBole checkpoint"),
    "teacher-of-another-seed": Case(kd("--teacher_checkpoint={stock}", "--seed=7"),
                                    "seed=2020, this run has seed=7"),
    "teacher-of-another-data-set": Case(
        lambda p: [*small_args(p["data"]), "-d", "ml-other", f"--teacher_checkpoint={p['stock']}"],
        "trained on data set 'ml-small'"),
    "distillation-checkpoint-as-teacher": Case(kd("--teacher_checkpoint={run}"),
                                               "is a DERRD \\(distillation\\) checkpoint"),
    "resume-of-another-seed": Case(kd("--kd_resume={last}", "--seed=7"),
                                   "seed=2020, this command has seed=7"),
    "resume-of-another-model": Case(kd("--kd_resume={last}", model="RRD"),
                                    "model='DERRD', this command has model='RRD'"),
    "resume-with-another-teacher": Case(kd("--kd_resume={last}", "--teacher_checkpoint={nan}"),
                                        "distilled another teacher .* set teacher_checkpoint"),
    "resume-on-another-device": Case(kd("--kd_resume={cuda_last}"),
                                     "written by a run on cuda; this run is on cpu"),
    "resume-from-a-text-file": Case(kd("--kd_resume={text}"), "kd_resume .* could not be read"),
    "resume-from-a-best-model-file": Case(kd("--kd_resume={run}"),
                                          "is a best-model checkpoint, not a resume point"),
    "malformed-config-file": Case(kd("--config_files={bad_yaml}"), "is not valid YAML"),
    "unknown-config-file": Case(kd("--config_files=bpr-typo"),
                                "'bpr-typo' is neither a file nor one of recbole_kd's shipped"),
    "unrecognised-argument": Case(kd("--epochs", "5"), "Unrecognised argument\\(s\\) --epochs 5"),
    "setting-without-value": Case(kd("--set", "epochs"), "'epochs' is not of the form key=value"),
    "missing-data-set": Case(lambda p: [*small_args(p["data"]), "-d", "ml-nowhere"],
                             "No data set 'ml-nowhere': the folder .* does not exist"),
    "empty-interaction-file": Case(
        lambda p: [*small_args(p["empty"]), "-d", "ml-empty"], "ml-empty.inter' holds no"),
    "sampled-protocol-without-leave-one-out": Case(kd("--kd_eval_protocol=fixed_sampled"),
                                                   "needs leave-one-out full-sort evaluation"),
    "nan-loss": Case(kd("--teacher_checkpoint={nan}", model="DE"), "'de_loss' is nan"),
    "compare-unknown-baseline": Case(kd("--compare", "--baselines=Nope"), "Unknown model 'Nope'"),
    "compare-no-seed": Case(kd("--compare", "--seeds=0"), "--seeds 0"),
    "compare-baseline-as-method": Case(kd("--compare", "--methods=BPR"),
                                       "'BPR' is not a distillation method"),
    "compare-method-named-twice": Case(kd("--compare", "--methods=RRD,RRD"),
                                       "--methods names RRD more than once"),
    "compare-negative-tune": Case(kd("--compare", "--tune=-1"), "--tune -1"),
    "compare-bad-setting": Case(kd("--compare", "--epochs=-3"), "'epochs' = -3 is invalid"),
    "compare-with-nproc": Case(kd("--compare", "--nproc=2"), "--nproc and --world_size apply"),
    "unknown-distributed-backend": Case(kd("--nproc=2", "--kd_dist_backend=mpi"),
                                        "'kd_dist_backend' = 'mpi' is invalid"),
    "nccl-without-cuda": Case(kd("--nproc=2", "--kd_dist_backend=nccl", "--use_gpu=False"),
                              "nccl needs CUDA devices"),
    "config-file-not-unicode": Case(kd("--config_files=latin1.yaml"), "'latin1.yaml' is not UTF-8"),
    "data-file-not-unicode": Case(lambda p: [*small_args(p["odd"]), "-d", "ml-latin1"],
                               "ml-latin1.inter' is not UTF-8"),
    "data-header-without-types": Case(lambda p: [*small_args(p["odd"]), "-d", "ml-untyped"],
                                      "RecBole could not read data set 'ml-untyped'"),
    "nothing-left-after-filtering": Case(kd("--user_inter_num_interval=[100000,inf)"),
                                         "holds no interaction once RecBole's filters ran"),
    "teacher-of-other-counts": Case(
        lambda p: [*small_args(p["resized"]), f"--teacher_checkpoint={p['stock']}"],
        "holds weights of other sizes than this run's BPR"),
    "malformed-hyper-file": Case(kd("--hyper=bad.hyper"), "bad.hyper', line 1 .* loguniform "
                                                          "takes 2 numbers"),
    "compare-results-is-a-file": Case(kd("--compare", "--results=notes.txt"),
                                      "'notes.txt': File exists: a file of that name"),
    "compare-damaged-results": Case(kd("--compare", "--results=damaged"),
                                    "comparison.json is damaged"),
    "convert-missing-input": Case(lambda p: ["users-dat", "nowhere.dat", "out"],
                                  "'nowhere.dat' does not exist", convert.main),
    "convert-name-outside-folder": Case(lambda p: ["users-dat", p["users_dat"], "out",
                                                   "--name=../escaped"],
                                        "--name '../escaped' must be a plain data set name",
                                        convert.main),
    "convert-nobody-kept": Case(lambda p: ["users-dat", p["users_dat"], "out", "--min-items=9"],
                                "no user has 9 or more items", convert.main),
    "rank-comparison-of-a-text-file": Case(lambda p: [p["text"], p["stock"]],
                                           "could not be read", rank_comparison.main),
}


@pytest.fixture(scope="module")
def finished_run(small_data, tmp_path_factory) -> str:
    """A folder whose saved/ holds a finished DERRD run: teacher cache, best model, resume
    point and export."""
    folder = tmp_path_factory.mktemp("finished")
    argv = sys.argv
    try:
        with working_in(folder):
            run_recbole_kd.main(small_args(small_data))
    finally:
        sys.argv = argv
    return str(folder / "saved")


@pytest.fixture
def paths(small_data, stock_teacher, workdir, saved_run) -> dict:
    """Files the cases point to, written in the test's work folder."""
    (workdir / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"weights": torch.zeros(3)}, workdir / "foreign.pth")
    (workdir / "bad.yaml").write_text("epochs: [1, 2\n")
    (workdir / "users.dat").write_text("2 5 6\n1 7\n")
    nan = torch.load(stock_teacher, weights_only=False)
    nan["state_dict"]["user_embedding.weight"][:] = float("nan")
    torch.save(nan, workdir / "nan.pth")
    empty = workdir / "empty"
    (empty / "ml-empty").mkdir(parents=True)
    (empty / "ml-empty" / "ml-empty.inter").write_text("")
    other = os.path.join(small_data, "ml-other")
    if not os.path.isdir(other):
        os.makedirs(other)
        with open(os.path.join(small_data, "ml-small", "ml-small.inter")) as src:
            lines = src.readlines()[:15000]
        with open(os.path.join(other, "ml-other.inter"), "w") as dst:
            dst.writelines(lines)
    (workdir / "latin1.yaml").write_bytes(b"epochs: 1\nnote: caf\xe9\n")
    (workdir / "bad.hyper").write_text("learning_rate loguniform -8,-4,3\n")
    for name, header, body in (("ml-latin1", b"user_id:token\titem_id:token\n", b"1\t\xe9\n"),
                               ("ml-untyped", b"user_id\titem_id\n", b"1\t2\n2\t3\n")):
        (workdir / "odd" / name).mkdir(parents=True)
        (workdir / "odd" / name / f"{name}.inter").write_bytes(header + body)
    resized = workdir / "resized" / "ml-small"  # another ml-small: other user and item counts
    resized.mkdir(parents=True)
    with open(os.path.join(small_data, "ml-small", "ml-small.inter")) as src:
        (resized / "ml-small.inter").write_text("".join(src.readlines()[:12000]))
    (workdir / "damaged" ).mkdir()
    (workdir / "damaged" / "runs.csv").write_text("not,a\nruns,file\n")
    (workdir / "damaged" / "comparison.json").write_text("{not json")
    (run,) = (p for p in glob.glob("saved/DERRD-*.pth")
              if not p.endswith(("-last.pth", "-student.pth")))
    last = glob.glob("saved/DERRD-*-last.pth")[0]
    on_cuda = torch.load(last, weights_only=False)
    on_cuda["device_type"] = "cuda"
    torch.save(on_cuda, workdir / "cuda-last.pth")
    return {"data": small_data, "stock": stock_teacher, "text": "notes.txt",
            "foreign": "foreign.pth", "bad_yaml": "bad.yaml", "users_dat": "users.dat",
            "nan": "nan.pth", "empty": str(empty), "run": run, "last": last,
            "cuda_last": "cuda-last.pth", "odd": str(workdir / "odd"),
            "resized": str(workdir / "resized")}


@pytest.fixture
def saved_run(finished_run, workdir) -> dict[str, str]:
    """The finished run's saved/ folder copied into the work folder; its files' digests."""
    shutil.copytree(finished_run, "saved")
    return digests("saved")


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_naming_it_and_nothing_saved_changes(
        name, saved_run, paths, capsys):  # saved_run before paths: the files it copies
    case = CASES[name]
    before_stock = digests(os.path.dirname(paths["stock"]))
    with pytest.raises(SystemExit) as stopped:
        case.tool(case.argv(paths))
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    lines = [line for line in error.splitlines() if ": error: " in line]
    assert len(lines) == 1 and re.search(case.message, lines[0]), error[-2000:]
    after = digests("saved")
    assert {path: after.get(path) for path in saved_run} == saved_run
    assert digests(os.path.dirname(paths["stock"])) == before_stock


def test_the_docs_error_table_lists_every_case():
    with open(DOCS, encoding="utf-8") as f:
        listed = re.findall(r"^\| `([a-z-]+)` \|", f.read(), flags=re.MULTILINE)
    assert len(listed) >= 25
    assert sorted(listed) == sorted(CASES)


def test_a_user_error_from_the_real_command_line_has_no_traceback_unless_asked(
        small_data, workdir):
    env = {**os.environ, "PYTHONPATH": REPOSITORY}
    command = [sys.executable, os.path.join(REPOSITORY, "run_recbole_kd.py"),
               *small_args(small_data), "--epochs=0"]
    quiet = subprocess.run(command, check=False, cwd=workdir, env=env, capture_output=True, text=True)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines()[-1].startswith("run_recbole_kd.py: error: ")
    assert "Traceback" not in quiet.stderr
    loud = subprocess.run([*command, "--debug"], check=False, cwd=workdir, env=env, capture_output=True,
                          text=True)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "KDConfigError" in loud.stderr
