#!/usr/bin/env bash
# The GPU check on a machine with Python 3.12, NumPy and JAX (CUDA) but no package index.
#   1. here:            benchmarks/fetch_device_wheels.sh      (fills benchmarks/.wheels)
#   2. on the machine:  OUT=/some/folder benchmarks/device_run.sh
# Installs the carried wheels into a temp folder (nothing system-wide), then writes to $OUT:
#   gpu_check.jsonl         every installed backend: a short training, images/s, and all checks
#   reference_spe1.jsonl    JAX, the reference configuration (45,000 images, batch 256, 50 epochs),
#                           compilation cache off
#   reference_spe16.jsonl   the same with steps_per_execution 16 (and its XLA compilations logged)
#   reference_spe16_cache_{cold,warm}.jsonl   the same with JAX's persistent compilation cache,
#                           empty, then filled by the run before
# plus environment.txt (nvidia-smi, JAX devices) and a .log of each run. Exits non-zero if any
# check failed. Sizes can be shrunk for a smoke test on a CPU, e.g.
#   OUT=/tmp/o EPOCHS=2 IMAGES=256 REF_EPOCHS=2 REF_IMAGES=512 BATCH=64 EXTRA=--allow-cpu \
#       benchmarks/device_run.sh
# RUNS=real (not in the default RUNS) trains on the real CIFAR-10 archive at ARCHIVE=PATH, which
# reaches the machine in pieces over several calls (benchmarks/device_archive.py, docs/gpu.md):
# prepared by the project's preprocess (benchmarks.data: 45,000/5,000/10,000), then
# benchmarks.time_to_accuracy writes tta_gpu.json (+ one tta_gpu-CONFIG.json per configuration):
# the reference config for its 50 epochs, fast-resnet stopped once its one-view test accuracy
# reaches 0.94 (--stop-at-target uses --target; the 0.91/0.94 marks are reported for both).
# Smaller for a CPU smoke test: REAL_TRAIN=images REAL_VAL=images REAL_EXTRA="--max-epochs 1".
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-benchmarks/.wheels}
EPOCHS=${EPOCHS:-3} IMAGES=${IMAGES:-45000} BATCH=${BATCH:-256}
REF_EPOCHS=${REF_EPOCHS:-50} REF_IMAGES=${REF_IMAGES:-45000}
EXTRA=${EXTRA:-}
REAL_TRAIN=${REAL_TRAIN:-} REAL_VAL=${REAL_VAL:-5000} REAL_EXTRA=${REAL_EXTRA:-}
RUNS=${RUNS:-"check spe1 spe16 cache"}  # which of the runs below, e.g. RUNS=cache
mkdir -p "$OUT"
# Checked before the wheels are installed: a forgotten ARCHIVE costs no time.
if [[ " $RUNS " == *" real "* && ! -f "${ARCHIVE:-}" ]]; then
    echo "error: RUNS=real needs ARCHIVE=PATH of the assembled archive (got '${ARCHIVE:-}')" >&2
    exit 2
fi

compgen -G "$WHEELS/*.whl" >/dev/null || {
    echo "error: no wheels in $WHEELS: run benchmarks/fetch_device_wheels.sh first" >&2; exit 1; }
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
else  # no pip: a wheel is a zip of importable files
    for wheel in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$wheel" "$SITE"; done
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "no nvidia-smi"
    KERAS_BACKEND=jax "$PY" -c 'import sys, jax, keras; print(sys.version); print("jax", jax.__version__,
jax.devices()); print("keras", keras.__version__)'
} >"$OUT/environment.txt" 2>&1 || true

status=0
wanted() { [[ " $RUNS " == *" $1 "* ]]; }
# shellcheck disable=SC2086  # EXTRA is a list of options
! wanted check || "$PY" benchmarks/gpu_check.py --epochs "$EPOCHS" --images "$IMAGES" \
    --batch-size "$BATCH" $EXTRA >"$OUT/gpu_check.jsonl" 2>"$OUT/gpu_check.log" || status=1
reference() {  # reference NAME SPE [VAR=value ...]: one 50-epoch JAX run into NAME.jsonl
    local name=$1 spe=$2
    shift 2
    # shellcheck disable=SC2086
    env "$@" "$PY" benchmarks/gpu_check.py --backends jax --no-checks --epochs "$REF_EPOCHS" \
        --images "$REF_IMAGES" --batch-size "$BATCH" --steps-per-execution "$spe" $EXTRA \
        >"$OUT/$name.jsonl" 2>"$OUT/$name.log" || status=1
}
# JAX_LOG_COMPILES: the .log lists each XLA compilation and its seconds (the first epoch's cost).
! wanted spe1 || reference reference_spe1 1 JAX_ENABLE_COMPILATION_CACHE=false
! wanted spe16 || reference reference_spe16 16 JAX_ENABLE_COMPILATION_CACHE=false JAX_LOG_COMPILES=1
# JAX's persistent compilation cache (on by default in the project), empty, then filled by the
# run before: what a first run and a rerun (or a CI retraining that keeps the cache) pay.
CACHE="$SITE/jax-cache"
for state in cold warm; do
    wanted cache || break
    reference "reference_spe16_cache_$state" 16 JAX_COMPILATION_CACHE_DIR="$CACHE"
done
real() {  # the real archive: prepare with the project's code, then time to accuracy
    local prepared
    prepared=$("$PY" -m benchmarks.data --archive "$ARCHIVE" ${REAL_TRAIN:+--size "$REAL_TRAIN"} \
        --val-size "$REAL_VAL" 2>"$OUT/prepare.log" | tail -n 1) || {
        echo "error: preparing $ARCHIVE failed; see $OUT/prepare.log" >&2; return 1; }
    # shellcheck disable=SC2086  # REAL_EXTRA is a list of options
    KERAS_BACKEND=jax "$PY" -m benchmarks.time_to_accuracy --prepared-dir "$prepared" \
        --out "$OUT/tta_gpu.json" --configs reference-config fast-resnet \
        --stop-at-target fast-resnet --target 0.94 $REAL_EXTRA >"$OUT/tta_gpu.log" 2>&1
}
! wanted real || real || status=1
cat "$OUT/environment.txt"; cat "$OUT"/*.jsonl 2>/dev/null || true  # none with RUNS=real alone
[[ ! -f "$OUT/tta_gpu.json" ]] || cat "$OUT/tta_gpu.json"
[[ $status == 0 ]] || echo "error: a check failed; see the .log files in $OUT" >&2
exit "$status"
