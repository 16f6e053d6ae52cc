#!/usr/bin/env bash
# The GPU check, for the day a machine with a CUDA GPU is at hand (about 8 minutes on one GPU):
#   - tests/test_cuda.py: every method on the GPU, resumes of DERRD, BD and DCD bit for bit, an
#     export made on the GPU loaded by stock RecBole on a CPU, deterministic kernels;
#   - a 2-process NCCL run, where the machine has 2 GPUs (NCCL needs one GPU per process);
#   - seconds per epoch of the student alone, DE, RRD, DE-RRD and BD on CiteULike-t
#     (benchmarks/speed.py), beside the authors' GPU logs (student 1.04, DE 11.13, RRD 3.17 s).
# Figures and logs go to ${OUT:-gpu-check}/; results/gpu.md says how to read them.
#
#   GPU_CHECK_USERS_DAT=<citeulike-t users.dat> bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
summary="$out/gpu-check.txt"
export PYTHONUNBUFFERED=1
{
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, recbole; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'recbole', recbole.__version__)"
} > "$summary" 2>&1

timeout 300 python -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$out/test_cuda.log" 2>&1
echo "tests/test_cuda.py: exit $? ($(tail -1 "$out/test_cuda.log"))" >> "$summary"

gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then
  timeout 180 python run_recbole_kd.py -m RRD --nproc 2 --gpu_id=0,1 --epochs=2 \
    --state=WARNING > "$out/nccl.log" 2>&1
  echo "2-process NCCL RRD run: exit $?" >> "$summary"
else
  echo "2-process NCCL run: skipped, $gpus GPU (NCCL needs one GPU per process)" >> "$summary"
fi

users_dat="${GPU_CHECK_USERS_DAT:-../shared/data/citeulike-t/users.dat}"
if [ -f "$users_dat" ]; then
  timeout 240 python benchmarks/speed.py --datasets citeulike-t --users-dat "$users_dat" \
    --epochs 2 --min-seconds 0 --runs DE RRD DERRD BD --set use_gpu=True gpu_id=0 \
    > "$out/speed.log" 2>&1
  echo "speed.py on CiteULike-t: exit $?" >> "$summary"
  tail -20 "$out/speed.log" >> "$summary"
else
  echo "speed on CiteULike-t: skipped, no users.dat at $users_dat" >> "$summary"
fi
cat "$summary"
