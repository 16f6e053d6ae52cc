#!/usr/bin/env bash
# Another environment than CI's: a torch and a RecBole release (by default the oldest that
# pyproject.toml admits), installed from the package registry into a fresh virtual environment,
# then a fast subset of the tests. Too slow for every CI run (a multi-GB torch download); run it
# before every release, for the oldest and the newest releases, and record the result in
# results/environments.md.
#
#   bash benchmarks/environment_check.sh [torch version] [recbole version]
set -euo pipefail
cd "$(dirname "$0")/.."
torch_version="${1:-2.4.1}"
recbole_version="${2:-1.2.1}"
venv="${CHECK_ENV:-/tmp/recbole-kd-check}"
rm -rf "$venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
# No pip configuration file: a machine's own cap on torch releases does not apply to this check.
export PIP_CONFIG_FILE=/dev/null
pip install --quiet "torch==$torch_version" "recbole==$recbole_version"
pip install --quiet ".[test]"
python -c "import torch, recbole, numpy, scipy, pandas; print('torch', torch.__version__, '| recbole', recbole.__version__, '| numpy', numpy.__version__, '| scipy', scipy.__version__, '| pandas', pandas.__version__)"
python -m pytest -q -p no:cacheprovider -x tests/test_losses.py tests/test_final_runs.py \
  tests/test_sequential.py tests/test_export.py tests/test_device_portability.py \
  tests/test_fused_optimizer.py
