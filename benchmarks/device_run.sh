#!/usr/bin/env bash
# The GPU check on a machine with Python 3.12, NumPy and JAX (CUDA) but no package index.
#   1. here:            benchmarks/fetch_device_wheels.sh      (fills benchmarks/.wheels)
#   2. on the machine:  OUT=/some/folder benchmarks/device_run.sh
# Installs the carried wheels into a temp folder (nothing system-wide), then writes to $OUT:
#   gpu_check.jsonl         every installed backend: a short training, images/s, and all checks
#   reference_spe1.jsonl    JAX, the reference configuration (45,000 images, batch 256, 50 epochs)
#   reference_spe16.jsonl   the same with steps_per_execution 16
# plus environment.txt (nvidia-smi, JAX devices) and a .log of each run. Exits non-zero if any
# check failed. Sizes can be shrunk for a smoke test on a CPU, e.g.
#   OUT=/tmp/o EPOCHS=2 IMAGES=256 REF_EPOCHS=2 REF_IMAGES=512 BATCH=64 EXTRA=--allow-cpu \
#       benchmarks/device_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-benchmarks/.wheels}
EPOCHS=${EPOCHS:-3} IMAGES=${IMAGES:-45000} BATCH=${BATCH:-256}
REF_EPOCHS=${REF_EPOCHS:-50} REF_IMAGES=${REF_IMAGES:-45000}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"

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
# shellcheck disable=SC2086  # EXTRA is a list of options
"$PY" benchmarks/gpu_check.py --epochs "$EPOCHS" --images "$IMAGES" --batch-size "$BATCH" \
    $EXTRA >"$OUT/gpu_check.jsonl" 2>"$OUT/gpu_check.log" || status=1
for spe in 1 16; do
    # shellcheck disable=SC2086
    "$PY" benchmarks/gpu_check.py --backends jax --no-checks --epochs "$REF_EPOCHS" \
        --images "$REF_IMAGES" --batch-size "$BATCH" --steps-per-execution "$spe" $EXTRA \
        >"$OUT/reference_spe$spe.jsonl" 2>"$OUT/reference_spe$spe.log" || status=1
done
cat "$OUT/environment.txt" "$OUT"/*.jsonl
[[ $status == 0 ]] || echo "error: a check failed; see the .log files in $OUT" >&2
exit "$status"
