"""Check that training really runs on the GPU, per installed Keras backend, and how fast.

    python benchmarks/gpu_check.py [--epochs 3] [--images 45000] [--batch-size 256]
                                   [--steps-per-execution 1] [--backends jax,tensorflow]
                                   [--no-checks] [--allow-cpu]

For each backend it starts a child process (KERAS_BACKEND=...) that trains the reference CNN
through the project's own ``pipeline.train.fit.fit`` (params.yaml's model and training settings,
mixed precision ``auto``, deterministic ops) on synthetic uint8 images, and prints one JSON line:
device, backend, precision policy, XLA/JIT, images/s per epoch, first-epoch (compile) seconds. It
then checks that

- the output layer computes in float32 (mixed precision keeps the softmax in float32),
- two deterministic trainings from the same seed end with identical weights,
- save -> load gives the same predictions and training resumes from the checkpoint,
- ``train.device=cpu`` hides the GPU from that backend (a child process of its own).

Exit status: 0 when every installed backend passed; 1 when a check failed, no GPU is visible
(unless --allow-cpu, for smoke tests on a CPU) or no backend is installed. A backend that is not
installed gets a line saying so and is not a failure.

Imports only Keras, NumPy, PyYAML, pydantic and the backend (no MLflow, DVC or TensorFlow unless
that is the backend), so it runs on a machine with little more than JAX installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("jax", "tensorflow")
# Images for each determinism training (one epoch each): enough batches to expose a
# non-deterministic reduction, small enough to cost seconds.
DETERMINISM_IMAGES = 4096
VAL_IMAGES = 512


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the timed training")
    parser.add_argument("--images", type=int, default=45000, help="synthetic training images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--steps-per-execution", type=int, help="default: params.yaml's train.steps_per_execution"
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument(
        "--no-checks", action="store_true", help="time only: skip determinism and resume"
    )
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run without a GPU (smoke tests on a CPU)"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per backend")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps_per_execution is None:
        sys.path.insert(0, str(REPO_ROOT))  # run as a script: the project may not be installed
        from pipeline.core.params import load_params

        args.steps_per_execution = load_params(REPO_ROOT / "params.yaml").train.steps_per_execution
    for option in ("epochs", "images", "batch_size", "steps_per_execution"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    unknown = set(args.backends.split(",")) - set(BACKENDS)
    if unknown:
        parser.error(f"--backends: unknown {sorted(unknown)}; choose from {list(BACKENDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    failed = ran = 0
    for name in args.backends.split(","):
        if importlib.util.find_spec(name) is None:
            note = f"{name} is not installed here: not checked"
            print(json.dumps({"backend": name, "installed": False, "note": note}), flush=True)
            continue
        ran += 1
        result = run_child(name, args)
        print(json.dumps(result), flush=True)
        failed += not result["ok"]
    if not ran:
        print("error: no Keras backend (jax, tensorflow) is installed", file=sys.stderr)
        return 1
    return 1 if failed else 0


def run_child(backend_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the check for one backend in a fresh process (Keras picks its backend at import)."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--child", backend_name, "--result", str(result_path)]
        for option in ("epochs", "images", "batch_size", "steps_per_execution"):
            command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
        command += ["--no-checks"] * args.no_checks + ["--allow-cpu"] * args.allow_cpu
        env = {**os.environ, "KERAS_BACKEND": backend_name, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            # Keras' per-epoch lines go to stderr: stdout carries only the JSON lines.
            proc = subprocess.run(command, env=env, stdout=sys.stderr, timeout=args.timeout)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = None
        if result_path.is_file():
            return json.loads(result_path.read_text())
    reason = "timed out" if returncode is None else f"exited {returncode}"
    return {"backend": backend_name, "installed": True, "ok": False,
            "errors": [f"check process {reason} before reporting"]}  # fmt: skip


def child_main(args: argparse.Namespace) -> int:
    """One backend, in this process: train, time, check; write the result JSON."""
    result: dict[str, Any] = {"backend": args.child, "installed": True, "errors": []}
    try:
        measure(args, result)
    except Exception as exc:  # any failure is a failed check, reported in the JSON line
        result["errors"].append(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    result["ok"] = not result["errors"] and all(result.get("checks", {}).values())
    args.result.write_text(json.dumps(result))
    return 0 if result["ok"] else 1


def measure(args: argparse.Namespace, result: dict[str, Any]) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    import keras
    import numpy as np

    from pipeline.core import keras_backend
    from pipeline.train import backend
    from pipeline.train.fit import describe_setup, precision_policy

    params = reference_params(args)
    if keras_backend.name() == "jax":  # before select_device, which may fill an empty cache folder
        result["compile_cache"] = compile_cache_state(backend.compilation_cache_dir(os.environ))
    gpus = backend.select_device("auto", deterministic=True)
    result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    if not gpus and not args.allow_cpu:
        raise RuntimeError(
            f"{keras_backend.name()} sees no GPU (driver, CUDA_VISIBLE_DEVICES, a CUDA build of "
            f"{keras_backend.name()}?); --allow-cpu runs this on the CPU"
        )
    # The train stage's choice (float16 on a GPU, bfloat16 on a CPU with bf16 math, else float32).
    keras.mixed_precision.set_global_policy(precision_policy(params.train.mixed_precision))
    result.update(
        backend_version=keras_backend.version(),
        keras_version=keras.__version__,
        device=", ".join(gpus) if gpus else "cpu",
        gpus=len(gpus),
        policy=keras.mixed_precision.global_policy().name,
        batch_size=args.batch_size,
        steps_per_execution=args.steps_per_execution,
        images=args.images,
        epochs=args.epochs,
    )
    data = synthetic_data(args.images, VAL_IMAGES, seed=0)
    checks: dict[str, bool] = {}
    result["checks"] = checks
    with tempfile.TemporaryDirectory(prefix="gpu-check-ckpt-") as tmp:
        model, history, checkpoint = train(data, params, Path(tmp) / "main")
        result["setup"] = describe_setup(model)
        result["jit"] = backend.jit_enabled(model)
        speeds = [row["images_per_s"] for row in history]
        result["images_per_s"] = [round(speed) for speed in speeds]
        result["first_epoch_s"] = round(history[0]["seconds"], 2)
        later = speeds[1:] or speeds
        result["mean_images_per_s_after_first"] = round(sum(later) / len(later))
        probs = np.asarray(model.predict(data.val_x[:64], verbose=0))
        checks["output_float32"] = (
            model.layers[-1].compute_dtype == "float32" and probs.dtype == np.float32
        )
        if args.no_checks:
            return
        checks["save_load_resume"] = check_resume(model, data, params, checkpoint, result)
        checks["deterministic"] = check_determinism(data, params, Path(tmp), result)
        if gpus:
            checks["device_cpu_hides_gpu"] = check_cpu_hides_gpu(args.child, result)


def compile_cache_state(folder: Path | None) -> str:
    """JAX's persistent compilation cache: off, cold (empty) or warm (filled by an earlier run)."""
    if folder is None:
        return "off"
    return "warm" if folder.is_dir() and any(folder.iterdir()) else "cold"


def reference_params(args: argparse.Namespace) -> Any:
    """params.yaml (the reference model and training), with the sizes given on the command line."""
    from pipeline.core.params import load_params

    return load_params(
        REPO_ROOT / "params.yaml",
        [
            f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}",
            f"train.steps_per_execution={args.steps_per_execution}",
            "train.deterministic=true",
            "train.mixed_precision=auto",
            "train.restore_best=false",
        ],
    )


def synthetic_data(n_train: int, n_val: int, seed: int) -> Any:
    """Random uint8 images with the label painted in a corner (learnable, like the tests' data)."""
    import numpy as np

    from pipeline.artifacts.prepared import Split
    from pipeline.train.fit import PreparedData

    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        x[:, :8, :8, :] = (y * 25)[:, None, None, None]
        return x, y

    (train_x, train_y), (val_x, val_y) = split(n_train), split(n_val)
    classes = [str(label) for label in range(10)]
    synthetic = Path("synthetic")
    return PreparedData(
        Split(train_x, train_y, synthetic), Split(val_x, val_y, synthetic), classes, []
    )


def train(data: Any, params: Any, folder: Path, resume: Any = None) -> tuple[Any, list, Any]:
    """``pipeline.train.fit.fit`` exactly as the train stage calls it, minus MLflow."""
    from pipeline.train import backend
    from pipeline.train.checkpoints import TrainingCheckpoint
    from pipeline.train.fit import fit

    backend.configure_determinism(params.train.seed, params.train.deterministic)
    checkpoint = TrainingCheckpoint(folder, {})  # resumed only by this check: no code to compare
    model, history = fit(
        data, params.model, params.train, checkpoint, "gpu-check", resume, lambda row: None
    )
    return model, history, checkpoint


def check_resume(model: Any, data: Any, params: Any, checkpoint: Any, result: dict) -> bool:
    """The last checkpoint loads to the same predictions, and training resumes from it."""
    import keras
    import numpy as np

    state = checkpoint.load()
    if state is None or state.epochs_done != params.train.epochs:
        result["errors"].append(f"resume: no checkpoint after epoch {params.train.epochs}")
        return False
    loaded = keras.saving.load_model(state.model_path)
    before = np.asarray(model.predict(data.val_x[:256], verbose=0), dtype=np.float64)
    after = np.asarray(loaded.predict(data.val_x[:256], verbose=0), dtype=np.float64)
    result["save_load_max_abs_diff"] = float(np.max(np.abs(before - after)))
    # Same weights, same inputs: only a different kernel choice could move the last float bits.
    same = result["save_load_max_abs_diff"] <= 1e-6
    if not same:
        result["errors"].append("resume: the loaded checkpoint predicts differently")
    more = params.model_copy(
        update={"train": params.train.model_copy(update={"epochs": params.train.epochs + 1})}
    )
    resumed, history, _ = train(data, more, checkpoint.folder, resume=state)
    moved = any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(model.get_weights(), resumed.get_weights(), strict=True)
    )
    finite = bool(np.isfinite(history[-1]["loss"]))
    if len(history) != params.train.epochs + 1 or not moved or not finite:
        result["errors"].append(
            f"resume: {len(history)} epochs (want {params.train.epochs + 1}), "
            f"weights changed {moved}, loss finite {finite}"
        )
        return False
    return same


def check_determinism(data: Any, params: Any, folder: Path, result: dict) -> bool:
    """Two one-epoch trainings from the same seed must end with bit-identical weights."""
    import numpy as np

    from pipeline.artifacts.prepared import Split
    from pipeline.train.fit import PreparedData

    n = min(len(data.train_x), DETERMINISM_IMAGES)
    first_images = Split(data.train_x[:n], data.train_y[:n], data.train.path)
    subset = PreparedData(first_images, data.val, [], [])
    one = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 1})})
    weights = []
    for attempt in ("a", "b"):
        model, _, _ = train(subset, one, folder / f"determinism-{attempt}")
        weights.append([np.asarray(w) for w in model.get_weights()])
    identical = all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
    if not identical:
        worst = max(float(np.max(np.abs(a - b))) for a, b in zip(*weights, strict=True))
        result["errors"].append(f"deterministic: weights differ (max abs diff {worst:.3g})")
    return identical


def check_cpu_hides_gpu(backend_name: str, result: dict) -> bool:
    """``train.device=cpu`` in a fresh process: the backend must then see no GPU."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pipeline.train import backend; "
        "from pipeline.core import keras_backend; "
        "print(len(backend.select_device('cpu', True)), len(keras_backend.gpu_names()))"
    )
    env = {**os.environ, "KERAS_BACKEND": backend_name}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seen = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
    if seen != ["0 0"]:
        result["errors"].append(f"device=cpu: the backend still sees a GPU ({proc.stdout!r})")
        return False
    return True


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    if not any(arg == "--child" for arg in sys.argv):
        print(f"gpu_check: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    sys.exit(code)
