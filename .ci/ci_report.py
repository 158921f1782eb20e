"""``reports/ci_report.md``: what a retraining run did, for a pull-request comment or a job summary.

Pure rendering from the pipeline's own outputs (registry.json, train_metrics.json, run.json, the
confusion matrix) plus the facts the retrain command gathered (stages, diffs, pushes).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.paths import EVALUATE_FILES, RUN_INFO_FILE, TRAIN_METRICS_FILE
from pipeline.core.redact import redact_uri

TITLE = "CI retraining report"


@dataclass
class Facts:
    """What the retrain command knows that no pipeline output says."""

    base: str | None
    base_commit: str | None
    head: str
    branch: str
    pull_request: bool
    overrides: list[str]
    ran: list[str]
    restored: list[str]
    unchanged: list[str]
    remote: str
    pushed: str
    gpus: str | None
    params_diff: str
    metrics_diff: str
    ci_run_url: str | None
    base_metrics: dict[str, Any] | None = None


def mlflow_run_link(run_info: Mapping[str, Any]) -> str:
    """A markdown link to the run in the MLflow UI, or its id and (masked) store for file stores."""
    run_id, experiment_id = run_info.get("run_id", "?"), run_info.get("experiment_id", "?")
    uri = redact_uri(str(run_info.get("tracking_uri", "")))
    if uri.startswith(("http://", "https://")) and "***@" not in uri and "?" not in uri:
        return f"[{run_id}]({uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"`{run_id}` (experiment {experiment_id}) in `{uri}`"


def ci_run_url(env: Mapping[str, str]) -> str | None:
    """This GitHub Actions run's page, from the variables every job gets."""
    keys = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    if not all(env.get(key) for key in keys):
        return None
    server, repository, run_id = (env[key] for key in keys)
    return f"{server}/{repository}/actions/runs/{run_id}"


def training_device(run_info: Mapping[str, Any]) -> str:
    """The ``device`` tag the train stage put on its MLflow run, or why it is unknown."""
    try:
        import mlflow

        from pipeline.tracking.runs import tracking_uri

        client = mlflow.MlflowClient(tracking_uri=tracking_uri())
        return client.get_run(str(run_info["run_id"])).data.tags.get("device", "unknown")
    except Exception as exc:  # the report must not fail because the tracking store is away
        return f"unknown ({type(exc).__name__})"


def render(facts: Facts, reports_dir: Path, models_dir: Path) -> str:
    """The whole report as markdown."""
    registry = _read_json(reports_dir / EVALUATE_FILES["registry"])
    train = _read_json(reports_dir / TRAIN_METRICS_FILE)
    metrics = _read_json(reports_dir / EVALUATE_FILES["metrics"])
    run_info = _read_json(models_dir / RUN_INFO_FILE)
    kind = "pull request: challenger only" if facts.pull_request else "champion gate applies"
    base = f"`{facts.base}` ({facts.base_commit})" if facts.base else "none"
    lines = [
        f"## {TITLE}: `{facts.branch}` @ {facts.head}",
        "",
        f"**Mode**: {kind}. **Base**: {base}."
        + (f" **Overrides**: `{' '.join(facts.overrides)}`." if facts.overrides else ""),
        "",
    ]
    if metrics:
        lines += [_headline(metrics, facts.base_metrics), ""]
    lines += ["### Registry", "", _registry_line(registry), ""]
    lines += ["### Stages", "", "| stage | this run |", "|---|---|"]
    for stage, what in _stage_rows(facts):
        lines.append(f"| {stage} | {what} |")
    lines += [
        "",
        f"DVC remote `{facts.remote}`: {facts.pushed or 'nothing pushed (--no-push)'}.",
        "",
        "### Training",
        "",
    ]
    lines += _training_lines(facts, train, run_info)
    lines += ["", f"### Params vs `{facts.base}`" if facts.base else "### Params", ""]
    lines += [_table_or(facts.params_diff, "No param differs from the base.")]
    lines += ["", f"### Metrics vs `{facts.base}`" if facts.base else "### Metrics", ""]
    lines += [_table_or(facts.metrics_diff, "No test metrics to compare with the base.")]
    lines += ["", "### Confusion matrix (test set)", ""]
    lines += _confusion_lines(reports_dir)
    lines += [
        "",
        "### Reproduce",
        "",
        "`dvc repro --pull` on this commit with the same params restores these outputs from "
        "the DVC remote (run-cache) instead of training again.",
    ]
    if facts.ci_run_url:
        lines += ["", f"[CI run]({facts.ci_run_url}) (its `retrain-results` artifact holds "
                  "`dvc.lock` and `reports/`)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _headline(metrics: dict[str, Any], base: dict[str, Any] | None) -> str:
    parts = []
    for name in ("accuracy", "loss"):
        value = metrics.get(name)
        if not isinstance(value, int | float):
            continue
        text = f"test {name} **{value:.4f}**"
        if base and isinstance(base.get(name), int | float):
            text += f" (base {base[name]:.4f}, {value - base[name]:+.4f})"
        parts.append(text)
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


def _registry_line(registry: dict[str, Any] | None) -> str:
    if not registry:
        return "No `reports/registry.json`: evaluate did not run."
    if registry.get("status") != "registered":
        return f"**failed**: {registry.get('reason', '?')}"
    champion = registry.get("champion_version")
    challenger = registry.get("challenger_version")
    return (
        f"**{registry['decision']}**: {registry['reason']}. "
        f"`{registry['registered_model']}` v{registry['version']}"
        f"{' (new version)' if registry.get('created') else ' (already registered)'}; "
        f"champion: {'v' + str(champion) if champion else 'none'}, "
        f"challenger: {'v' + str(challenger) if challenger else 'none'}."
    )


def _stage_rows(facts: Facts) -> list[tuple[str, str]]:
    rows = [(stage, "**ran**") for stage in facts.ran]
    rows += [(stage, "restored from the run-cache (not rerun)") for stage in facts.restored]
    rows += [(stage, "unchanged") for stage in facts.unchanged]
    return rows


def _training_lines(
    facts: Facts, train: dict[str, Any] | None, run_info: dict[str, Any] | None
) -> list[str]:
    if "train" in facts.ran:
        when = "trained in this run"
    elif "train" in facts.restored:
        when = "restored from the run-cache, trained by an earlier run"
    else:
        when = "unchanged, trained by an earlier run"
    seconds = f"{train['train_seconds']:.1f} s" if train and "train_seconds" in train else "?"
    epochs = f"{train['epoch']:g}" if train and "epoch" in train else "?"
    lines = [f"- model: {when}; {epochs} epoch(s) in {seconds}"]
    if run_info:
        lines.append(f"- device: {training_device(run_info)}")
        lines.append(f"- MLflow run: {mlflow_run_link(run_info)}")
    if facts.gpus:
        lines.append(f"- GPUs on this runner: {facts.gpus}")
    return lines


def _table_or(table: str, empty: str) -> str:
    rows = [line for line in table.strip().splitlines() if line.startswith("|")]
    return table.strip() if len(rows) > 2 else empty


def _confusion_lines(reports_dir: Path) -> list[str]:
    path = reports_dir / EVALUATE_FILES["confusion_csv"]
    if not path.is_file():
        return ["No confusion matrix: evaluate did not run."]
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    lines = [
        "![Confusion matrix](confusion_matrix.png)",
        "",
        "<details><summary>As a table (rows: actual, columns: predicted)</summary>",
        "",
        "| | " + " | ".join(header[1:]) + " |",
        "|---" * len(header) + "|",
    ]
    lines += ["| **" + row[0] + "** | " + " | ".join(row[1:]) + " |" for row in body]
    return [*lines, "", "</details>"]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
