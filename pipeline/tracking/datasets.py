"""The prepared splits as MLflow datasets: name, md5 digest, source URL and row count.

Logged with the run (train and val by the train stage, test by the evaluate stage) so the runs
table's Datasets column, the run page and the logged model say what the model saw.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.artifacts.prepared import Split
from pipeline.core.checksums import file_md5

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
        """The input tags MLflow shows beside the dataset: its context and row count."""
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        return {MLFLOW_DATASET_CONTEXT: self.context, ROWS_TAG: str(self.rows)}


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


def log_datasets(run_id: str, datasets: list[SplitDataset], attempts: int = 3) -> None:
    """Log ``datasets`` as inputs of run ``run_id`` (active or finished, without reopening it).

    Two runs logging the same new dataset at the same moment can both find it missing and both
    insert it: MLflow's SQL store checks, then inserts, so the second insert fails on the
    datasets table's unique key. The failed call wrote nothing (one transaction), and on the next
    try the dataset exists and is reused, so that one error is retried, ``attempts`` times at most.
    """
    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    inputs = [
        DatasetInput(
            d.dataset._to_mlflow_entity(),
            tags=[InputTag(key, value) for key, value in d.tags.items()],
        )
        for d in datasets
    ]
    client = mlflow.MlflowClient()
    for attempt in range(1, attempts + 1):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as error:
            if attempt == attempts or not is_duplicate_dataset(str(error)):
                raise


# How PostgreSQL, SQLite and MySQL word a duplicate row in MLflow's datasets table.
_DUPLICATE_DATASET = re.compile(
    r'"dataset_pk"|UNIQUE constraint failed: datasets\.|Duplicate entry .* for key \S*dataset',
)


def is_duplicate_dataset(message: str) -> bool:
    """Whether an MLflow error says another run inserted the same dataset first."""
    return _DUPLICATE_DATASET.search(message) is not None
