"""The prepared splits as MLflow datasets: name, md5 digest, source URL and row count.

Logged with the run (train and val by the train stage, test by the evaluate stage) so the runs
table's Datasets column, the run page and the logged model say what the model saw.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.checksums import file_md5
from pipeline.prepared import Split

# MLflow's own values for the mlflow.data.context input tag.
CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
ROWS_TAG = "rows"


@dataclass(frozen=True)
class SplitDataset:
    """An MLflow dataset of one split and the context it was used in."""

    split: str
    dataset: Any  # mlflow.data.numpy_dataset.NumpyDataset
    rows: int

    @property
    def context(self) -> str:
        return CONTEXTS[self.split]

    @property
    def tags(self) -> dict[str, str]:
        return {ROWS_TAG: str(self.rows)}


def split_dataset(split: str, data: Split, source_url: str) -> SplitDataset:
    """``data`` as an MLflow dataset named ``cifar10-<split>``, digest = md5 of its npz file.

    ``source_url`` is ``data.url``: where the archive the split was cut from came from.
    """
    import mlflow

    with warnings.catch_warnings():
        # A local path matches two of MLflow's file source kinds; both are the same here.
        warnings.filterwarnings("ignore", message="The specified dataset source")
        dataset = mlflow.data.from_numpy(
            data.x,
            source=source_url,
            targets=np.asarray(data.y),
            name=f"cifar10-{split}",
            digest=file_md5(data.path),
        )
    return SplitDataset(split, dataset, len(data.y))


def log_datasets(datasets: list[SplitDataset]) -> None:
    """Log ``datasets`` as inputs of the active run."""
    import mlflow

    mlflow.log_inputs(
        datasets=[d.dataset for d in datasets],
        contexts=[d.context for d in datasets],
        tags_list=[d.tags for d in datasets],
    )


def log_datasets_to(run_id: str, datasets: list[SplitDataset]) -> None:
    """Log ``datasets`` as inputs of run ``run_id`` without reopening it."""
    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = [
        DatasetInput(
            d.dataset._to_mlflow_entity(),
            tags=[InputTag(MLFLOW_DATASET_CONTEXT, d.context), InputTag(ROWS_TAG, str(d.rows))],
        )
        for d in datasets
    ]
    mlflow.MlflowClient().log_inputs(run_id, datasets=inputs)
