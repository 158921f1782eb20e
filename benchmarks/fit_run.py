"""One training through the project's own code (``pipeline.train.fit.fit``), scored per epoch.

The train stage's library path without its MLflow run: params (params.yaml, a profile, --set),
seeding and determinism, the precision policy, the input pipeline and ``fit``. With
``--eval-test`` the test split is scored after every epoch (and with flip test-time augmentation
too when the params set ``evaluate.flip_tta``) by a callback that runs after the epoch's timing
is taken, so scoring is not part of the training time. Each epoch's row is
written to ``--out`` as it finishes; ``--final-only`` scores the last epoch only.

    python -m benchmarks.fit_run --prepared-dir D --out fit.json [--profile fast] [--set k=v]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

STARTED = time.perf_counter()

from benchmarks.common import REPO_ROOT, write_json  # noqa: E402
from pipeline.core.params import load_params  # noqa: E402
from pipeline.core.profiles import load_profile  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    parser.add_argument("--profile", help="a profile under profiles/, applied before --set")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--eval-test", action="store_true", help="score the test split per epoch")
    parser.add_argument(
        "--final-only", action="store_true",
        help="with --eval-test, score only the last epoch (TTA's six passes cost minutes each)",
    )  # fmt: skip
    parser.add_argument("--stop-at", type=float, help="stop once test accuracy reaches this")
    parser.add_argument("--max-epochs", type=int, help="cap train.epochs (a time budget)")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile, args.params) if args.profile else None
    overrides = (profile.overrides if profile else []) + args.overrides
    params = load_params(args.params, overrides)
    planned = params.train.epochs
    if args.max_epochs and planned > args.max_epochs:
        # A schedule then spans the capped run: the profile is shortened, not cut off.
        overrides.append(f"train.epochs={args.max_epochs}")
        params = load_params(args.params, overrides)

    import keras
    import numpy as np

    from pipeline.artifacts import prepared

    # NumPy-only scoring: this runs on a GPU machine without pandas or scikit-learn.
    from pipeline.evaluate.tta import (
        flip_tta_accuracy,
        mirrored_probabilities,
        predict_probabilities,
        translate_tta_accuracy,
    )
    from pipeline.train import backend
    from pipeline.train.checkpoints import TrainingCheckpoint
    from pipeline.train.fit import fit, load_prepared, precision_policy

    # The train stage's order: the device first, then seeds and determinism, then precision.
    backend.select_device(params.train.device, params.train.deterministic)
    backend.configure_determinism(params.train.seed, params.train.deterministic)
    policy = precision_policy(params.train.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    data = load_prepared(args.prepared_dir)
    test = prepared.read_split(args.prepared_dir, "test", len(data.classes))
    test_x, test_y = test.x, test.y
    result = {
        "profile": args.profile or "reference-config",
        "epochs_planned": planned,
        "overrides": overrides,
        "params": params.model_dump(include={"model", "train", "evaluate"}),
        "policy": policy,
        "n_train": len(data.train_x),
        "epochs": [],
    }
    rows: list[dict] = result["epochs"]

    class ScoreTest(keras.callbacks.Callback):
        """Test accuracy after each epoch, outside the epoch's timing; stop at ``--stop-at``."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            row = dict(history[-1])
            # CPU seconds of this process so far (all threads): what the training really got
            # on a shared machine, where wall time also counts the other programs' load.
            row["process_cpu_s"] = time.process_time()
            last = epoch + 1 == params.train.epochs
            if args.eval_test and (last or not args.final_only):
                # Scored as the evaluate stage scores: its functions, its evaluate.flip_tta.
                probabilities = predict_probabilities(self.model, test_x)
                row["test_accuracy"] = float(np.mean(probabilities.argmax(axis=1) == test_y))
                tta = params.evaluate
                mirrored = (
                    mirrored_probabilities(self.model, test_x)
                    if tta.flip_tta or tta.translate_tta
                    else None
                )
                if tta.flip_tta:
                    row["test_accuracy_flip_tta"] = flip_tta_accuracy(
                        self.model, test_x, test_y, probabilities, mirrored
                    )
                if tta.translate_tta:
                    row["test_accuracy_translate_tta"] = translate_tta_accuracy(
                        self.model, test_x, test_y, probabilities, mirrored
                    )
            rows.append(row)
            result["startup_s"] = fit_started - STARTED
            write_json(args.out, result)
            if args.stop_at and row.get("test_accuracy", 0.0) >= args.stop_at:
                self.model.stop_training = True

    # fit() hands each finished epoch's row to log_epoch before the scorer runs.
    history: list[dict] = []
    with TemporaryDirectory() as tmp:
        checkpoint = TrainingCheckpoint(Path(tmp), {})  # never resumed: no code to check
        fit_started = time.perf_counter()
        fit(
            data,
            params.model,
            params.train,
            checkpoint,
            "bench",
            None,
            history.append,
            [ScoreTest()],
        )
    result["complete"] = True
    write_json(args.out, result)


if __name__ == "__main__":
    main()
