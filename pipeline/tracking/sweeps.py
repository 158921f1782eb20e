"""Sweeps in MLflow: the trials of one sweep are the training runs tagged ``sweep=<name>``.

``mlflow.sweep`` in params.yaml (null by default) names the sweep a training belongs to; the
train stage then tags its run with it, so a grid queued with ``dvc exp run --queue -S
mlflow.sweep=NAME -S 'train.learning_rate=...'`` lands in the store as one group the UI can
filter on (``tags.sweep = 'NAME'``). This module owns that tag and is the one reader of it.
"""

from __future__ import annotations

# The tag the train stage puts on a run when mlflow.sweep is set.
SWEEP_TAG = "sweep"
