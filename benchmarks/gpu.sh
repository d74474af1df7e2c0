#!/usr/bin/env bash
# The GPU measurements in one command: simulator throughput, training samples/s of the `cpu` and
# `paper` embeddings (bfloat16 autocast against float32 in the same run) and inference throughput,
# then the CUDA-against-CPU agreement tests. Written to benchmarks/results/*_cuda.{json,md}.
#
# Usage (from anywhere; runs in the repository root):
#   bash benchmarks/gpu.sh                              # one GPU: sized for under 8 minutes on an H100
#   bash benchmarks/gpu.sh --device cpu --quick         # the same steps in a check-sized form
#   bash benchmarks/gpu.sh --quick --results-dir /tmp/r # any run can write elsewhere
#
# On a machine without network where the project's pure-Python dependencies are missing, carry
# their wheels in .whl/ (README, "GPU install"): they are installed into a temporary folder first.
# PYTHON names the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
quick=0
results_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="${2:?--device needs a value}"; shift 2 ;;
    --quick) quick=1; shift ;;
    --results-dir) results_dir="${2:?--results-dir needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ! "$PYTHON" -c "import sbi, astropy, zuko, h5netcdf" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    site="$(mktemp -d)/site"
    echo "== installing the carried wheels of .whl/ into $site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl
    export PYTHONPATH="$site:$PYTHONPATH"
  else
    echo "gpu.sh: error: $PYTHON lacks the project's packages (sbi, astropy, zuko, h5netcdf) and .whl/ holds no wheels" >&2
    exit 2
  fi
fi
"$PYTHON" -c "import torch, sys; sys.exit(0 if '$device' == 'cpu' or torch.cuda.is_available() else 1)" \
  || { echo "gpu.sh: error: --device $device asked for, but torch sees no CUDA device" >&2; exit 2; }

out=()
[ -n "$results_dir" ] && out=(--results-dir "$results_dir")
if [ "$quick" = 1 ]; then
  sim=(--batch 8 --repeats 1)
  train=(--quick)
  infer=(--n 8 --repeats 1 --num-samples 20 --memory-n 16 --infer-memory-n 0)
else
  sim=(--batch 1024 --repeats 5)
  train=(--embeddings cpu,paper)
  infer=(--n 8192 --batch-size 1024 --repeats 3 --memory-n 20000 --infer-memory-n 0)
fi

step() { local t0; t0=$(date +%s); echo "== $1"; shift; "$@"; echo "   took $(( $(date +%s) - t0 )) s"; }
start=$(date +%s)
"$PYTHON" -c "import torch; print('torch', torch.__version__, '| device:', torch.cuda.get_device_name(0) if '$device' != 'cpu' else 'cpu')"
step "simulator throughput" "$PYTHON" -m benchmarks.simulator --device "$device" "${sim[@]}" "${out[@]}"
step "training throughput" "$PYTHON" -m benchmarks.training_speed --device "$device" "${train[@]}" "${out[@]}"
step "inference throughput" "$PYTHON" -m benchmarks.inference --device "$device" "${infer[@]}" "${out[@]}"
if [ "$device" != cpu ]; then
  step "CUDA against CPU (pytest -m gpu)" "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
fi
echo "gpu.sh finished in $(( $(date +%s) - start )) s; results in ${results_dir:-benchmarks/results}"
