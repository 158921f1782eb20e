"""Batch prediction speed: ``python -m stages.predict`` on N PNG files of the real test split.

The champion is the configured model (params.yaml's architecture; untrained weights, which cost
the same to run as trained ones), logged and registered in a scratch MLflow store. The test
split of ``--archive`` is written as ``--images`` PNG files (repeated if it holds fewer), and the
whole command is timed once in a fresh interpreter: start-up, model loading, reading and
decoding the files, prediction, the CSV, figures and the MLflow run.

    python -m benchmarks.predict_throughput --archive A --out predict.json [--images 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import REPO_ROOT, check, machine_info, module, run_measured, write_json


def register_champion(tracking_uri: str) -> None:
    """Log the configured model and register it as version 1, alias champion."""
    import mlflow

    from pipeline.core.params import load_params
    from pipeline.data.cifar import NUM_CLASSES
    from pipeline.tracking.serving import log_served_model
    from pipeline.train.model import build_model

    mlflow.set_tracking_uri(tracking_uri)
    params = load_params(REPO_ROOT / "params.yaml")
    model = build_model(params.model)
    classes = [f"class{index}" for index in range(NUM_CLASSES)]
    with mlflow.start_run():
        uri = log_served_model(model, classes, "bench")
    name = params.mlflow.registered_model_name
    version = mlflow.register_model(uri, name)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version.version)


def write_pngs(archive: Path, folder: Path, count: int) -> int:
    """The archive's test images as ``count`` PNG files in ``folder``; returns the count."""
    from PIL import Image

    from pipeline.data.cifar import read_cifar_archive

    test = read_cifar_archive(archive).test_x
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(test[index % len(test)]).save(folder / f"{index:05}.png")
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as scratch:
        root = Path(scratch)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        register_champion(uri)
        images = write_pngs(args.archive, root / "images", args.images)
        measured = check(
            run_measured(
                module(
                    "stages.predict", root / "images", "--output", root / "out",
                    "--params", REPO_ROOT / "params.yaml",
                ),
                env={"MLFLOW_TRACKING_URI": uri},
            ),
            "stages.predict",
        )  # fmt: skip
        report = json.loads((root / "out" / "predict_report.json").read_text())
    if report["images"] != images:
        raise SystemExit(f"error: predicted {report['images']} of {images} images")
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "cpu_cores": os.cpu_count(),
            "images": images,
            "wall_s": round(measured.wall_s, 2),
            "cpu_s": round(measured.cpu_s, 2),
            "peak_rss_mb": round(measured.peak_rss_mb, 1),
            "images_per_s": round(images / measured.wall_s, 1),
            "mean_confidence": float(np.round(report["mean_confidence"], 4)),
        },
    )
    print(args.out)


if __name__ == "__main__":
    main()
