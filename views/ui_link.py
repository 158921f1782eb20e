"""The MLflow UI link ``make ui`` prints: the experiment's training runs, ready to compare.

MLflow 3.17 opens an experiment in its GenAI overview and its runs table with no metric or param
column. It has no saved views, but it has shared ones: the runs page reads the view state
(columns, sort) from the experiment tag ``mlflow.sharedViewState.<key>`` when the URL carries
``viewStateShareKey=<key>``, the tag its own Share button writes. This module writes such a tag
(test accuracy, macro F1, the last validation loss and the params that differ between the runs,
sorted by test accuracy, best first) and prints the link to it.

What it cannot do: the columns are those of the runs present when ``make ui`` starts (rerun it
after new experiments), a browser that already chose GenAI mode may still show the GenAI sidebar
(``workflowType=machine_learning`` in the link asks for the classic one), and the compare page's
charts (parallel coordinates, scatter axes) take no state from the URL.

    python -m views.ui_link [--base http://127.0.0.1:5000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Any

from pipeline.tracking import metric_names

SHARED_VIEW_TAG = "mlflow.sharedViewState."
# The figures a user compares first, best test accuracy on top.
METRIC_COLUMNS = (metric_names.TEST_ACCURACY, metric_names.test("macro_f1"), "loss/val")
# What the runs page shows by default; kept so the table still says where each run came from.
DEFAULT_COLUMNS = ("attributes.`Models`", "attributes.`Dataset`")
# A param column's width in pixels per character of its name, plus the header's padding, and
# test accuracy's (MLflow's default is 100): narrow enough that test accuracy and three params fit
# beside the run name and date at 1440 px wide with MLflow's Assistant panel open (it opens by
# itself on a browser's first visit to a local server), measured in Chromium.
PX_PER_CHAR, HEADER_PADDING_PX, MIN_COLUMN_PX, ACCURACY_PX = 5.5, 20, 80, 95
# What an m or w takes beyond an average letter: at 5.5 px a letter, `train.momentum` (three of
# them) was cut to `train.momentu` in Chromium at 1440 x 900.
WIDE_LETTERS, WIDE_EXTRA_PX = "mwMW", 3.5


def column(kind: str, name: str) -> str:
    """The runs table's key for a column: ``metrics.`test/accuracy```."""
    return f"{kind}.`{name}`"


def differing_params(runs: list[Any]) -> list[str]:
    """The params whose values are not the same in every run, sorted by name."""
    names = sorted({name for run in runs for name in run.data.params})
    return [name for name in names if len({run.data.params.get(name) for run in runs}) > 1]


def view_state(params: list[str]) -> dict[str, Any]:
    """The shared view state: the compared columns, sorted by test accuracy, best first.

    Test accuracy, then the params that differ (each as wide as its name), then macro F1 and
    the validation loss, the first to leave the screen when it is narrow.
    """
    accuracy, *other_metrics = (column("metrics", name) for name in METRIC_COLUMNS)
    param_columns = {column("params", name): param_width(name) for name in params}
    columns = [accuracy, *param_columns, *other_metrics]
    return {
        "orderByKey": column("metrics", metric_names.TEST_ACCURACY),
        "orderByAsc": False,
        "selectedColumns": [*columns, *DEFAULT_COLUMNS],
        "columnOrder": columns,
        "columnWidths": {accuracy: ACCURACY_PX, **param_columns},
    }


def param_width(name: str) -> int:
    """A param column's width in pixels: its whole name in the header, no more."""
    wide = sum(name.count(letter) for letter in WIDE_LETTERS)
    text = PX_PER_CHAR * len(name) + WIDE_EXTRA_PX * wide
    return max(MIN_COLUMN_PX, round(text) + HEADER_PADDING_PX)


def share_key(state: dict[str, Any]) -> str:
    """A key named by the state's content: the same runs give the same link."""
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def compare_link(client: Any, experiment_name: str, base: str) -> str:
    """Write the shared view of ``experiment_name`` into its tags and return its link.

    Without the experiment (nothing trained yet), the link to the experiments list.
    """
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    state = view_state(differing_params(runs))
    key = share_key(state)
    client.set_experiment_tag(experiment.experiment_id, SHARED_VIEW_TAG + key, json.dumps(state))
    return (
        f"{base}/#/experiments/{experiment.experiment_id}/runs"
        f"?viewStateShareKey={key}&workflowType=machine_learning"
    )


def main(argv: list[str] | None = None) -> int:
    """Print the link of the project's experiment (params.yaml's mlflow.experiment_name)."""
    import mlflow

    from pipeline.core.params import load_params
    from pipeline.tracking.runs import tracking_uri

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:5000", help="the UI's address")
    args = parser.parse_args(argv)
    name = load_params().mlflow.experiment_name
    link = compare_link(mlflow.MlflowClient(tracking_uri()), name, args.base.rstrip("/"))
    print(f"Training runs of {name}, compared (test accuracy, macro F1, val loss, changed params):")
    print(f"  {link}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
