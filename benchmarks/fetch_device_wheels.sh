#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_check.py needs on a GPU machine that has Python 3.12,
# NumPy and JAX (CUDA) but no package index: Keras and what `pipeline.train.fit` imports, at the
# versions in uv.lock, for CPython 3.12 on x86_64 Linux. Into benchmarks/.wheels (git-ignored);
# benchmarks/device_run.sh installs them there. NumPy and ml-dtypes are left out on purpose: the
# machine's JAX was built against its own. REAL_PACKAGES are what RUNS=real adds: preprocess
# (benchmarks.data.prepared_dir) reads params with ruamel.yaml and renders its preview PNG with
# matplotlib (whose wheels are not all pure Python, and most of the size). pandas and
# scikit-learn are not needed: fit_run scores with pipeline/evaluate/tta.py (NumPy only).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=benchmarks/.wheels
PACKAGES="keras absl-py h5py namex optree rich markdown-it-py mdurl pygments packaging pyyaml
pydantic pydantic-core annotated-types typing-extensions typing-inspection"
REAL_PACKAGES="ruamel-yaml matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing
python-dateutil six"
UV=${UV:-.tools/bin/uv}
PIP=${PIP:-.tools/bin/pip}

locked=$("$UV" export --frozen --no-hashes --no-emit-project --extra cpu)
pins=()
for name in $PACKAGES $REAL_PACKAGES; do
    pin=$(grep -E "^${name}==" <<<"$locked" | head -n 1 | cut -d ' ' -f 1) || true
    [[ -n "$pin" ]] || { echo "error: $name is not in uv.lock" >&2; exit 1; }
    pins+=("$pin")
done
rm -rf "$DEST"
mkdir -p "$DEST"
"$PIP" download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any "${pins[@]}"
du -sh "$DEST"
ls "$DEST"
