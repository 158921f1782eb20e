"""Register each trained model in the MLflow Model Registry and decide who is champion.

Aliases, never the deprecated stages. ``champion`` is the version to serve: it moves to a version
only if its test accuracy reaches ``register.min_accuracy`` and beats the current champion's
(read from the champion's ``test_accuracy`` version tag) by more than
``register.min_improvement``; ``register.allow_champion: false`` never moves it. ``challenger`` is
the newest evaluated version that reached ``register.min_accuracy`` but did not become champion
(it lost on improvement, or ``allow_champion`` is false), a candidate waiting for a better figure
or a human: a promotion removes it (the candidate won), so the two never name the same version. A
version below the floor gets no alias (serving ``@challenger`` must never serve noise), only its
``registry.decision`` tag ``rejected``. Rerunning the champion's own evaluation leaves both aliases
where they are.

A version carries a few tags that fit the registry's versions table (accuracy, decision, commit,
DVC experiment); the rest (data, gate, reason) is in its description, whose first line is the
headline the versions table previews: ``test accuracy 0.3076 — promoted: beat v4 (0.1792)``.
Both say what held when the version was registered (or its evaluation last rerun), in the past
tense and dated, so that a later champion does not make an older version's "did not beat v2" read
as now.

The registered model's tag ``champion`` repeats the champion's version and accuracy: MLflow's
models list shows only the alias on the newest aliased version, so a newer challenger hid it.

Registration is idempotent: a second call for the same MLflow run reuses its version.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.locks import exclusive_lock
from pipeline.core.params import RegisterParams
from pipeline.core.redact import redact
from pipeline.tracking.lineage import CODE_AND_DATA_TAGS, DVC_TAGS, UNKNOWN
from pipeline.tracking.serving import INPUT_FORMAT

log = logging.getLogger("pipeline")

CHAMPION = "champion"
CHALLENGER = "challenger"
ACCURACY_TAG = "test_accuracy"
RUN_ID_TAG = "run_id"
DECISION_TAG = "registry.decision"
# The tags a version carries; the other lineage and the register.* gate go into its description.
VERSION_TAGS = (ACCURACY_TAG, DECISION_TAG, "git.commit", "dvc.experiment")
# Registered-model tags that earlier code wrote; the description says the same.
OBSOLETE_MODEL_TAGS = ("task", "classes")
# Registering takes seconds; a wait this long only fails when something is stuck.
REGISTRY_LOCK_WAIT_S = 120.0


@dataclass(frozen=True)
class Decision:
    """What happens to the champion alias, and why, in one sentence."""

    decision: str  # promoted | already_champion | kept | rejected | challenger_only
    reason: str
    promote: bool
    # The short outcome after the accuracy in the description's first line ("promoted: beat v4
    # (0.1792)"), in the past tense: it stays true after a later champion. Empty reads as
    # "<decision>: <reason>".
    headline: str = ""


@dataclass(frozen=True)
class RegistryResult:
    """The outcome of one registration, as written to ``reports/registry.json``."""

    status: str
    registered_model: str
    version: str
    created: bool
    run_id: str
    model_uri: str
    test_accuracy: float
    decision: str
    reason: str
    champion_version: str | None
    previous_champion_version: str | None
    challenger_version: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def version_lineage(run_id: str, run_tags: dict[str, str]) -> dict[str, str]:
    """The run id and the run's code and data tags, for the version; missing ones read "unknown".

    The DVC experiment that made the run is copied too, when there was one.
    """
    lineage = {RUN_ID_TAG: run_id} | {key: run_tags.get(key, UNKNOWN) for key in CODE_AND_DATA_TAGS}
    return lineage | {key: run_tags[key] for key in DVC_TAGS if key in run_tags}


def decide(
    test_accuracy: float,
    champion_version: str | None,
    champion_accuracy: float | None,
    policy: RegisterParams,
) -> Decision:
    """Apply the promotion gate to a candidate that is not the champion already."""
    champion = f"champion v{champion_version}" if champion_version else "no champion"
    floor = f"register.min_accuracy {policy.min_accuracy:.4f}"
    # The floor comes first: below it a version is no candidate at all, whatever the gate says.
    if test_accuracy < policy.min_accuracy:
        return Decision(
            "rejected",
            f"test accuracy {test_accuracy:.4f} is below {floor} ({champion})",
            False,
            f"rejected, no alias: was below {floor}",
        )
    if not policy.allow_champion:
        return Decision(
            "challenger_only",
            f"register.allow_champion is false ({champion})",
            False,
            "made challenger: register.allow_champion was false",
        )
    if champion_version is None:
        return Decision(
            "promoted",
            f"first version to reach {floor} (test accuracy {test_accuracy:.4f})",
            True,
            f"promoted: first version to reach {floor}",
        )
    if champion_accuracy is None:
        # Never silently replace a champion someone picked by hand without a figure to compare.
        return Decision(
            "kept",
            f"{champion} has no valid {ACCURACY_TAG} tag to compare with",
            False,
            f"made challenger: v{champion_version} had no {ACCURACY_TAG} to compare with",
        )
    versus = (
        f"test accuracy {test_accuracy:.4f} vs {champion} {champion_accuracy:.4f} "
        f"+ register.min_improvement {policy.min_improvement:.4f}"
    )
    if test_accuracy > champion_accuracy + policy.min_improvement:
        return Decision(
            "promoted",
            f"beats the champion: {versus}",
            True,
            f"promoted: beat v{champion_version} ({champion_accuracy:.4f})",
        )
    return Decision(
        "kept",
        f"does not beat the champion: {versus}",
        False,
        f"made challenger: did not beat v{champion_version} ({champion_accuracy:.4f})"
        + (f" by {policy.min_improvement:.4f}" if policy.min_improvement else ""),
    )


def policy_tags(policy: RegisterParams) -> dict[str, str]:
    """``register.*`` as JSON text: ``{"register.min_accuracy": "0.7", ...}``."""
    return {f"register.{key}": json.dumps(value) for key, value in policy.model_dump().items()}


def register_model_version(
    name: str,
    model_uri: str,
    run_id: str,
    run_tags: dict[str, str],
    test_accuracy: float,
    policy: RegisterParams,
    classes: Sequence[str] = (),
    details: str = "",
) -> RegistryResult:
    """Register ``model_uri`` (once per run), tag it, move the aliases and return the outcome.

    ``classes`` (the model's output columns) and ``details`` (a phrase about the data) go into
    the descriptions. Any registry failure (server gone, invalid name) becomes a PipelineError.
    """
    import mlflow

    uri = mlflow.get_tracking_uri()
    remove_stale_locks(registry_lock_path(uri, name).parent, "*registry-*.lock")
    # Two evaluates at once would both miss the other's version and register the run twice.
    with (
        exclusive_lock(
            registry_lock_path(uri, name),
            f"registered model '{name}'",
            REGISTRY_LOCK_WAIT_S,
            "another evaluate is registering to it: rerun once it is done",
        ),
        mlflow_errors(f"registering {model_uri} as model '{name}'"),
    ):
        client = mlflow.MlflowClient()
        return _register(
            client, name, model_uri, run_id, run_tags, test_accuracy, policy, list(classes), details
        )


def registry_lock_path(tracking_uri: str, name: str) -> Path:
    """The lock file of registered model ``name`` in the store at ``tracking_uri``.

    Beside a SQLite store's file; in the temp folder for a server, keyed by its URI, so only
    processes on the same machine are kept apart (MLflow offers no registry transaction).
    """
    digest = hashlib.sha256(f"{tracking_uri}\n{name}".encode()).hexdigest()[:16]
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return db.with_name(f"{db.name}.registry-{digest}.lock")
    return Path(tempfile.gettempdir()) / "cifar10-pipeline-locks" / f"registry-{digest}.lock"


def remove_stale_locks(folder: Path, pattern: str) -> list[Path]:
    """Delete the lock files under ``folder`` that no process holds; return them.

    A lock file is removed by its holder on release, so one left over is a kill -9's: a flock
    taken without waiting proves nobody holds it, and it is unlinked while still held.
    """
    removed = []
    for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
            removed.append(path)
        except OSError:
            pass  # held right now, or already gone
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def mlflow_errors(action: str) -> Iterator[None]:
    """Turn an MLflow failure (server gone, bad name, store error) into a one-line PipelineError."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, OSError) as exc:
        message = " ".join(str(exc).split())
        raise PipelineError(redact(f"{action} failed: {message}")) from None
    except SQLAlchemyError as exc:
        # A SQL registry store MLflow cannot open raises SQLAlchemy's own error, its SQL attached.
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise PipelineError(redact(f"{action} failed: the registry store: {reason}")) from None


def _register(
    client: Any,
    name: str,
    model_uri: str,
    run_id: str,
    run_tags: dict[str, str],
    test_accuracy: float,
    policy: RegisterParams,
    classes: list[str],
    details: str,
) -> RegistryResult:
    lineage = version_lineage(run_id, run_tags) | {ACCURACY_TAG: repr(float(test_accuracy))}
    tags = {key: lineage[key] for key in VERSION_TAGS if key in lineage}
    version, created = _find_or_create_version(client, name, model_uri, run_id, tags)
    if not created:
        # A rerun may follow a change of test data: the tags must describe this evaluation.
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)

    champion = _alias_version(client, name, CHAMPION)
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is not None and challenger == champion:
        # Only a promotion killed between its two alias moves (in the order of earlier code)
        # leaves both on one version: the promotion happened, so the candidate is gone.
        client.delete_registered_model_alias(name, CHALLENGER)
        challenger = None
    if champion == version:
        decision = Decision(
            "already_champion",
            f"v{version} is already the champion",
            False,
            "was champion when its evaluation reran",
        )
    else:
        champion_accuracy = _champion_accuracy(client, name, champion) if champion else None
        decision = decide(test_accuracy, champion, champion_accuracy, policy)
    if decision.promote:
        # The challenger goes first: a kill between the two moves then leaves the old champion
        # and no challenger, which the next evaluate promotes from again. The other order could
        # leave both aliases on this version, which the next evaluate took as already promoted.
        if challenger is not None:
            client.delete_registered_model_alias(name, CHALLENGER)
        client.set_registered_model_alias(name, CHAMPION, version)
        challenger = None
    elif decision.decision == "rejected":
        # A rerun on other test data can drop the waiting challenger below the floor.
        if challenger == version:
            client.delete_registered_model_alias(name, CHALLENGER)
            challenger = None
    elif decision.decision != "already_champion":
        client.set_registered_model_alias(name, CHALLENGER, version)
        challenger = version
    client.set_model_version_tag(name, version, DECISION_TAG, decision.decision)
    _show_champion(client, name, version if decision.promote else champion)
    # The register.* values this decision used go into the description (not the training run).
    moment = "registration" if created else "re-evaluation"
    decided = f"at {moment} on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    description = version_description(lineage, decision, details, policy_tags(policy), decided)
    client.update_model_version(name, version, description=description)
    client.update_registered_model(name, description=model_description(name, classes))
    # Earlier code tagged the model with its task and classes (both in the description): the
    # models list shows a model's first three tags on one line, which pushed `champion` off it.
    stale = set(OBSOLETE_MODEL_TAGS) & set(client.get_registered_model(name).tags)
    for key in sorted(stale):
        client.delete_registered_model_tag(name, key)
    log.info("registry: %s v%s: %s (%s)", name, version, decision.decision, decision.reason)
    return RegistryResult(
        status="registered",
        registered_model=name,
        version=version,
        created=created,
        run_id=run_id,
        model_uri=model_uri,
        test_accuracy=float(test_accuracy),
        decision=decision.decision,
        reason=decision.reason,
        champion_version=version if decision.promote else champion,
        previous_champion_version=champion,
        challenger_version=challenger,
    )


def _find_or_create_version(
    client: Any, name: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> tuple[str, bool]:
    """The version already registered for ``run_id``, else a new one: (version, created)."""
    import mlflow

    # MLflow 3 keeps the run id on versions registered from "models:/m-..." URIs (checked in
    # tests/test_registry.py), so the registry can be searched by run directly.
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return str(min(int(v.version) for v in existing)), False
    from pipeline.core.quiet import quiet_stderr_prints

    # register_model prints two lines of its own; the stage's registry line says the same.
    with quiet_stderr_prints():
        created = mlflow.register_model(model_uri, name, tags=tags)
    return str(created.version), True


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    # The store hands alias targets back as ints, version numbers elsewhere as strings.
    version = client.get_registered_model(name).aliases.get(alias)
    return None if version is None else str(version)


def _show_champion(client: Any, name: str, champion: str | None) -> None:
    """Mirror the champion in the registered model's tag ``champion``: ``v3 · 0.3100``.

    MLflow's models list shows only the alias of the newest aliased version and hides the others
    behind "+1": a challenger newer than the champion hid it. The list's Tags column shows this
    tag whatever the version order; rewritten at every evaluate, so it heals after a kill. The
    value is the version and its test accuracy only: the list's Tags column cut the longer
    ``v6, test accuracy 0.1825`` to ``champion: v6, test accuracy 0.1``.
    """
    if champion is None:
        if CHAMPION in client.get_registered_model(name).tags:
            client.delete_registered_model_tag(name, CHAMPION)
        return
    accuracy = _champion_accuracy(client, name, champion)
    figure = "" if accuracy is None else f" · {accuracy:.4f}"
    client.set_registered_model_tag(name, CHAMPION, f"v{champion}{figure}")


def _champion_accuracy(client: Any, name: str, version: str) -> float | None:
    value = client.get_model_version(name, version).tags.get(ACCURACY_TAG)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def model_description(name: str, classes: list[str]) -> str:
    """What the registered model is, how to call it and what its aliases mean (Markdown)."""
    return (
        f"**{name}**: CIFAR-10 image classifier trained by this project's DVC pipeline "
        "(params.yaml pins every hyperparameter; model.arch picks the architecture, each "
        "version's run logs it).\n\n"
        "**Input**: raw images, N x 32 x 32 x 3 uint8 RGB pixels 0-255 "
        '(`{"inputs": [...]}`); anything else is refused with HTTP 400.\n'
        f"**Output**: one probability per class, columns named {', '.join(classes) or 'by class'}."
        "\n\n"
        "**Aliases**: `champion` is the version to serve (it moves only when a version passes "
        "the register.* gate); `challenger` is the newest evaluated version that reached "
        "register.min_accuracy but did not become champion (removed when a version is "
        "promoted); a version below register.min_accuracy gets no alias."
    )


def headline(test_accuracy: float, decision: Decision) -> str:
    """The description's first line, which the versions table previews.

    ``test accuracy 0.3076 — promoted: beat v4 (0.1792)``.
    """
    outcome = decision.headline or f"{decision.decision}: {decision.reason}"
    return f"test accuracy {test_accuracy:.4f} — {outcome}"


def version_description(
    tags: dict[str, str],
    decision: Decision,
    details: str = "",
    gate: dict[str, str] | None = None,
    decided: str = "at registration",
) -> str:
    """The headline, then what this version is, its data, accuracy, decision and gate (Markdown).

    ``tags`` is the version's whole lineage (``version_lineage`` plus ``test_accuracy``), ``gate``
    the ``register.*`` values the decision used, ``decided`` when the decision was made
    (``at registration on 2026-12-05 00:03 UTC``): the reason compares with the champion of then.
    """
    experiment = tags.get("dvc.experiment")
    source = f" (DVC experiment `{experiment}`)" if experiment else ""
    dirty = {"true": "with uncommitted changes", "false": "clean"}.get(tags["git.dirty"], "")
    baseline = tags.get("dvc.baseline_rev")
    lines = [
        headline(float(tags[ACCURACY_TAG]), decision),
        f"**What**: CIFAR-10 classifier from MLflow run `{tags[RUN_ID_TAG]}`{source}, git commit "
        f"`{tags['git.commit']}` {dirty}".rstrip()
        + ".",
        f"**Data**: {details + '; ' if details else ''}raw archive md5 `{tags['data.raw_md5']}`, "
        f"prepared data md5 `{tags['data.prepared_md5']}`.",
        f"**Test accuracy**: {float(tags[ACCURACY_TAG]):.4f}.",
        f"**Decision**: {decided}, {decision.decision}: {decision.reason}.",
        # The version page's schema reads "Inputs (0)": an input schema would cast floats.
        f"**Input**: {INPUT_FORMAT}.",
    ]
    if gate:
        lines.append("**Gate**: " + ", ".join(f"`{key}` {value}" for key, value in gate.items()))
    if baseline:
        lines.append(f"**DVC baseline**: `{baseline}`.")
    return "\n\n".join(lines)


def failure_record(
    name: str, error: str, model_uri: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """What ``reports/registry.json`` says when nothing was registered: never a success."""
    return {
        "status": "failed",
        "registered_model": name,
        "run_id": run_id,
        "model_uri": model_uri,
        "decision": "failed",
        "reason": error,
    }
