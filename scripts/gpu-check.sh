#!/usr/bin/env bash
# The GPU checks of issue 9 on a machine with an NVIDIA GPU, JAX and/or PyTorch, no
# TensorFlow and no package registry. Run from a checkout of this repo:
#
#   scripts/gpu-check.sh WHEELHOUSE OUT [STAGE ...]     # WHEELHOUSE from scripts/gpu-wheelhouse.sh
#   BACKENDS="jax" scripts/gpu-check.sh wheelhouse-gpu /tmp/gpu demo bench
#   BACKENDS=jax scripts/gpu-check.sh wheelhouse-gpu /tmp/gpu study     # issue 32: < 8 minutes
#
# WHEELHOUSE "-" installs nothing and runs in the current environment (a dry run on a CPU
# machine with hpo's own virtualenv); without nvidia-smi, GPU memory is not sampled.
#
# Stages (default: demo bench memory oom workers; each backend in $BACKENDS, default "jax torch"):
#   demo     a 2-trial demo study at 64 px that must say "device feed" and name the GPU
#   bench    bench/bench_gpu.py: trial vs the compiled step's ceiling, 64/128 px, float32/bf16
#   memory   30 trials in one process with the GPU's used memory sampled every second (JAX
#            preallocation off, so the trace shows what the trials hold)
#   oom      a study where some configurations are far too big: those trials must fail as
#            out of memory, the others train, and the study go on to its end
#   workers  1, 2 and 4 `hpo worker`s sharing one 16-trial study and the GPU
#            (--gpu-memory-fraction 0.9/N): trials/hour
#   study    50 trials on an Animals-10-shaped set (26,179 generated JPEGs, 10 classes),
#            128 px, search_spaces/gpu/animals10.toml, by STUDY_WORKERS workers (default 4,
#            the most trials per hour measured on an H100) sharing the GPU, trials in the
#            workers' own processes, JAX's compilation cache in OUT/cache/xla shared by all;
#            wall time, the GPU memory trace, and bench/timeline.py's per-trial timeline
#            (study-timeline.json) and one-line summary (not in the default). hpo's --timeout
#            STUDY_SECONDS (default 300) stops starting trials after that, and running ones
#            are interrupted 60 s later, so generating, decoding and the study fit 8 minutes
#            of one call. Dry run at tiny size: STUDY_SCALE=0.01 STUDY_IMAGE_SIZE=32
#            STUDY_EPOCHS=3 STUDY_TRIALS=6 STUDY_WORKERS=2 ... - /tmp/dry study
#
# hpo's needs go into a --target folder put on PYTHONPATH after this checkout, so the
# machine's own JAX, PyTorch and NumPy (and what they need: ml_dtypes, typing_extensions,
# filelock) stay the ones they were built with. Work goes under OUT; OUT/summary.txt is the
# one-line-per-check result. STAGE_TIMEOUT (seconds, default 300) bounds each stage.
set -uo pipefail

WHEELS="${1:?usage: scripts/gpu-check.sh WHEELHOUSE OUT [STAGE ...]}"
[ "$WHEELS" = - ] || WHEELS="$(cd "$WHEELS" && pwd)"
OUT="${2:?usage: scripts/gpu-check.sh WHEELHOUSE OUT [STAGE ...]}"
shift 2
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(demo bench memory oom workers)
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
LIMIT="${STAGE_TIMEOUT:-300}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SITE="$OUT/site"
export HPO_CACHE_DIR="$OUT/cache" HPO_ARTIFACTS="$OUT/artifacts" MPLBACKEND=Agg PYTHONUNBUFFERED=1
# Each check's line goes to OUT/summary.txt as soon as it is known, so a run cut off by the
# lent machine's time limit still leaves the lines of the stages it finished.
note() { echo "$1" >> "$OUT/summary.txt"; echo "== $1"; }
HPO=("$PY" -m hpo)

if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv | tee "$OUT/gpu.txt"
else
  echo "no nvidia-smi: no GPU, GPU memory not sampled" | tee "$OUT/gpu.txt"
fi
if [ "$WHEELS" = - ]; then
  SITE=""  # the current environment has hpo's needs
elif [ ! -d "$SITE" ]; then
  keep='/(numpy|ml_dtypes|typing_extensions|filelock)-'  # the machine's own, for its backends
  mapfile -t wheels < <(ls "$WHEELS"/*.whl | grep -Ev "$keep")
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}" \
    || { echo "error: installing from $WHEELS failed" >&2; exit 1; }
fi
export PYTHONPATH="$REPO${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, the wheel's metadata
"$PY" -c 'import importlib.metadata as m; print(*(f"{p} {m.version(p)}" for p in
  ("hpo", "keras", "optuna", "numpy", "jax", "torch") if __import__("importlib").util.find_spec(p)), sep=", ")' \
  | tee "$OUT/versions.txt"

gpu_used_mib() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2> /dev/null; }
sample_memory() {  # every second: unix time, used MiB of GPU 0 (0 without nvidia-smi)
  while true; do echo "$(date +%s),$(gpu_used_mib || echo 0)"; sleep 1; done
}
run_for() { timeout --signal=INT --kill-after=20 "$LIMIT" "$@"; }
share_of() { awk "BEGIN{print 0.9/$1}"; }  # each of N workers' --gpu-memory-fraction
seconds_since() { echo $(( $(date +%s) - $1 )); }

stage_demo() {
  run_for "${HPO[@]}" run demo --trials 2 --epochs 2 --image-size 64 --storage sqlite:///demo.db \
    > demo.log 2>&1
  local rc=$?
  if grep -q "device feed" demo.log && grep -q "GPU" demo.log; then
    note "$backend demo: exit $rc, device feed on the GPU: $(grep -m1 '^backend:' demo.log)"
  else
    note "$backend demo: exit $rc, did NOT use the GPU's device feed (see demo.log)"
  fi
}

stage_bench() {
  run_for "$PY" "$REPO/bench/bench_gpu.py" --out "$PWD/bench.json" > bench.txt 2> bench.log
  note "$backend bench: exit $?; table in bench.txt"
  cat bench.txt
}

stage_memory() {
  sample_memory > memory.csv & local sampler=$!
  HPO_TRIALS_PER_PROCESS=0 XLA_PYTHON_CLIENT_PREALLOCATE=false run_for "${HPO[@]}" run demo \
    --study memory --trials 30 \
    --epochs 3 --image-size 64 --storage sqlite:///memory.db > memory.log 2>&1
  local rc=$?
  kill "$sampler"
  note "$backend memory: exit $rc, 30 trials, GPU MiB used first/max/last: $(cut -d, -f2 memory.csv \
    | awk 'NR==1{f=$1} {if($1>m)m=$1; l=$1} END{print f"/"m"/"l}')"
}

stage_oom() {
  # 4 random trials at 192 px whose filters are 8 or OOM_FILTERS (default 256): with 256, one
  # batch of the 416 training images makes ~84 GiB of activations (hpo.execution's estimate),
  # so those trials must fail as out of memory before compiling, the others train.
  cat > oom.toml <<EOF
[params]
learning_rate = 1e-3
batch_size = 1024
l2 = 1e-5
dropout = 0.1
conv_blocks = 3
activation = "relu"
filters = { choices = [8, ${OOM_FILTERS:-256}] }
[train]
epochs = 1
image_size = ${OOM_IMAGE_SIZE:-192}
precision = "float32"
EOF
  run_for "${HPO[@]}" run demo --study oom --space oom.toml --trials 4 --strategy random \
    --storage sqlite:///oom.db > oom.log 2>&1
  local rc=$?
  note "$backend oom: exit $rc, trials failed as out of memory: $(grep -c 'failed: out of memory' oom.log) of 4; $(grep -m1 'complete,' oom.log)"
}

stage_workers() {  # `hpo worker --trials N` is the study's total, shared by its workers
  local n started s
  for n in 1 2 4; do
    started=$(date +%s)
    for ((w = 1; w <= n; w++)); do
      run_for "${HPO[@]}" worker demo --study "shared$n" --trials 16 --epochs 3 \
        --image-size 64 --strategy random --gpu-memory-fraction "$(share_of "$n")" \
        --storage "sqlite:///shared$n.db" > "workers$n-$w.log" 2>&1 &
    done
    wait
    s=$(seconds_since "$started")
    note "$backend workers: $n sharing 16 trials, ${s}s = $(( 16 * 3600 / (s > 0 ? s : 1) )) trials/hour; $(grep -h 'complete,' "workers$n"-*.log | tail -1)"
  done
}

stage_study() {  # STUDY_WORKERS (default 4) `hpo worker`s share the study and the GPU
  local data="$OUT/animals10-synth-${STUDY_SCALE:-1}" started n=${STUDY_WORKERS:-4} w sampler
  local seconds=${STUDY_SECONDS:-300} size=${STUDY_IMAGE_SIZE:-128} decode pids=() epochs=()
  [ -n "${STUDY_EPOCHS:-}" ] && epochs=(--epochs "$STUDY_EPOCHS")
  started=$(date +%s)
  [ -d "$data" ] || "$PY" "$REPO/bench/synthetic_animals10.py" "$data" --scale "${STUDY_SCALE:-1}" \
    | tee -a "$OUT/summary-study.txt"
  note "$backend study: generating the images took $(seconds_since "$started")s"
  started=$(date +%s)
  run_for "${HPO[@]}" data inspect "$data" --dataset animals10 --image-size "$size" > decode.log 2>&1
  decode=$(seconds_since "$started")
  note "$backend study: decoding into the cache took ${decode}s"
  sample_memory > study-memory.csv & sampler=$!
  started=$(date +%s)
  for ((w = 1; w <= n; w++)); do  # JAX frees a trial's memory: no trial processes needed
    HPO_TRIALS_PER_PROCESS=${HPO_TRIALS_PER_PROCESS:-0} LIMIT=$((seconds + 60)) run_for \
      "${HPO[@]}" worker animals10 --data-dir "$data" --image-size "$size" ${epochs[@]+"${epochs[@]}"} \
      --space "$REPO/search_spaces/gpu/animals10.toml" --trials "${STUDY_TRIALS:-50}" \
      --timeout "$seconds" --gpu-memory-fraction "$(share_of "$n")" --storage sqlite:///study.db \
      > "study-$w.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  local rc=$?
  kill "$sampler"
  note "$backend study: $n worker(s), exit $rc, ${STUDY_TRIALS:-50} trials asked, wall $(seconds_since "$started")s; GPU MiB used max $(cut -d, -f2 study-memory.csv | sort -n | tail -1); compilation cache $(du -sh "$HPO_CACHE_DIR/xla" 2> /dev/null | cut -f1); $(grep -h 'complete,' study-*.log | tail -1)"
  note "$backend study timeline: $("$PY" "$REPO/bench/timeline.py" sqlite:///study.db animals10 \
    --decode-seconds "$decode" --out "$PWD/study-timeline.json" 2>&1 | tail -1)"
}

for backend in ${BACKENDS:-jax torch}; do
  if ! "$PY" -c "import $backend" 2>/dev/null; then note "$backend: not installed, skipped"; continue; fi
  export KERAS_BACKEND=$backend
  mkdir -p "$OUT/$backend"; cd "$OUT/$backend" || exit 1
  for stage in "${STAGES[@]}"; do
    started=$(date +%s)
    "stage_$stage"
    echo "   ($stage took $(seconds_since "$started")s)"
  done
  cd "$OUT" || exit 1
done

cat "$OUT/summary.txt"
