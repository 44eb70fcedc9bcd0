#!/usr/bin/env bash
# The GPU checks of issue 9 on a machine with an NVIDIA GPU, JAX and/or PyTorch, no
# TensorFlow and no package registry. Run from a checkout of this repo:
#
#   scripts/gpu-check.sh WHEELHOUSE [OUT]        # WHEELHOUSE from scripts/gpu-wheelhouse.sh
#
# 1. installs hpo from WHEELHOUSE into a venv that sees the machine's JAX/PyTorch/NumPy
#    (--system-site-packages; nothing is downloaded);
# 2. for each backend that imports (jax, torch): a demo study that must say "device feed";
#    the benchmark (bench/bench_gpu.py: 64/128 px, float32/bf16, trial vs ceiling);
#    30 trials with the GPU's used memory sampled every second (memory must come back);
#    a study whose configuration is far too big: its trials must fail as "GPU out of
#    memory" and the study go on to its end;
#    2 workers sharing the GPU with --gpu-memory-fraction 0.45;
# 3. writes everything under OUT (default gpu-check-<date>/) and prints a summary.
# Data: hpo's demo images, generated on the machine; the benchmark makes its own.
set -uo pipefail

WHEELS="${1:?usage: scripts/gpu-check.sh WHEELHOUSE [OUT]}"
OUT="${2:-gpu-check-$(date -u +%Y%m%dT%H%M%S)}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
VENV="$OUT/venv"
export HPO_CACHE_DIR="$OUT/cache" HPO_ARTIFACTS="$OUT/artifacts" MPLBACKEND=Agg
summary=()
note() { summary+=("$1"); echo "== $1"; }

nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PYTHON" -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt" \
  || { echo "error: installing from $WHEELS failed" >&2; exit 1; }
HPO="$VENV/bin/hpo"; PY="$VENV/bin/python"

sample_memory() {  # every second: time, used MiB of GPU 0
  while true; do
    echo "$(date +%s),$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)"
    sleep 1
  done
}

for backend in jax torch; do
  if ! "$PY" -c "import $backend" 2>/dev/null; then note "$backend: not installed, skipped"; continue; fi
  export KERAS_BACKEND=$backend
  dir="$OUT/$backend"; mkdir -p "$dir"; cd "$dir" || exit 1

  "$HPO" run demo --trials 2 --epochs 2 --image-size 64 --storage sqlite:///demo.db > demo.log 2>&1
  if grep -q "device feed" demo.log && grep -q "GPU" demo.log; then
    note "$backend: demo study ran on the GPU with the device feed ($(grep '^trials:' demo.log))"
  else
    note "$backend: demo study did NOT use the GPU device feed (see $dir/demo.log)"
  fi

  "$PY" "$REPO/bench/bench_gpu.py" --out "$dir/bench.json" > bench.txt 2> bench.log \
    && note "$backend: benchmark table in $dir/bench.txt" \
    || note "$backend: benchmark failed (see $dir/bench.log)"

  sample_memory > memory.csv & sampler=$!
  "$HPO" run demo --study memory --trials 30 --epochs 3 --image-size 64 \
    --storage sqlite:///memory.db > memory.log 2>&1
  kill "$sampler"
  note "$backend: 30 trials, GPU memory used (MiB) first/max/last: $(cut -d, -f2 memory.csv | \
    awk 'NR==1{f=$1} {if($1>m)m=$1; l=$1} END{print f"/"m"/"l}')"

  cat > oom.toml <<'EOF'
[params]
learning_rate = 1e-3
batch_size = 65536
l2 = 1e-5
dropout = 0.1
conv_blocks = 5
activation = "relu"
filters = 1024
[train]
epochs = 1
image_size = 128
feed = "host"
EOF
  "$HPO" run demo --study oom --space oom.toml --trials 2 --storage sqlite:///oom.db > oom.log 2>&1
  rc=$?
  oom=$(grep -c "GPU out of memory" oom.log)
  note "$backend: too-big study exit $rc, trials failed as GPU out of memory: $oom of 2 (0 and 2 expected)"

  for w in 1 2; do
    "$HPO" worker demo --study shared --trials 6 --epochs 2 --image-size 64 \
      --gpu-memory-fraction 0.45 --storage sqlite:///shared.db > "worker$w.log" 2>&1 &
  done
  wait
  note "$backend: 2 workers at --gpu-memory-fraction 0.45: $(grep -h 'trials done\|stopped' worker*.log | tr '\n' ' ')"
  cd "$OUT" || exit 1
done

printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
