"""The installed command: a wheel built from the checkout, installed into a fresh virtual
environment, runs a one-epoch job outside the repository as ``recbole-kd`` and ``python -m
recbole_kd``."""

from __future__ import annotations

import glob
import os
import site
import subprocess
import sys
import venv

import pytest

from tests.conftest import REPOSITORY
from tests.test_error_catalogue import small_args


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """A fresh virtual environment holding the wheel of the checkout; its dependencies are
    this environment's (a path file), so that nothing is downloaded."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", REPOSITORY, "-w", str(root / "dist")],
                   check=True, capture_output=True, cwd=root)
    (wheel,) = glob.glob(str(root / "dist" / "recbole_kd-*.whl"))
    venv.create(root / "env", with_pip=False)
    (env_site,) = glob.glob(str(root / "env" / "lib" / "python*" / "site-packages"))
    with open(os.path.join(env_site, "dependencies.pth"), "w", encoding="utf-8") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    python = str(root / "env" / "bin" / "python")
    # --ignore-installed: a recbole_kd installed in this environment (as CI installs it) must
    # not stand in for the wheel.
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                    "--no-deps", "--ignore-installed", wheel], check=True, capture_output=True)
    return str(root / "env" / "bin")


@pytest.mark.parametrize("command", [["recbole-kd"], ["python", "-m", "recbole_kd"]])
def test_the_installed_command_runs_a_job_outside_the_repository(installed, small_data, workdir,
                                                                 command):
    executable = [os.path.join(installed, command[0]), *command[1:]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([os.path.join(installed, "python"), "-c",
                            "import recbole_kd; print(recbole_kd.__file__)"], cwd=workdir,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(os.path.dirname(installed)) and REPOSITORY not in where
    done = subprocess.run([*executable, *small_args(small_data, "RRD"), "--state=INFO"],
                          cwd=workdir, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Student exported for RecBole" in done.stdout + done.stderr
    assert glob.glob(str(workdir / "saved" / "RRD-*-student.pth"))
    bad = subprocess.run([*executable, "--epochs=0"], cwd=workdir, env=env,
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        f"{' '.join(command) if command[0] != 'python' else 'python -m recbole_kd'}: error:")
