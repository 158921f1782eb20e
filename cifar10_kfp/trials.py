"""The trials of a Kubeflow sweep: a trials file or a grid -> checked params overrides.

A trial is a mapping of params keys to values, e.g. ``{"train.learning_rate": 0.002,
"train.optimizer": "adam"}``: the run's params with those keys replaced, for one training. Only
keys the train stage reads (dvc.yaml) may vary; preprocess runs once for the whole sweep, and the
sweep sets ``train.device``, ``mlflow.sweep`` and ``mlflow.experiment_name`` itself. A trials
file is a YAML list of such mappings (``[]`` or ``{}`` items are read strictly: one line per
problem); a grid (``train.learning_rate=0.0005,0.001,0.002``) is every combination of its
values. Every trial is checked against the params schema with the rest of the run's values
before anything is sent, and two trials that train the same thing are refused.

A trial travels to its training as JSON text (one item of the sweep's ``trials`` list), so
its values arrive as typed as they left. No TensorFlow and no kfp here: ``cifar10_kfp.submit``
checks trials with it, and the sweep's train component checks its own trial's keys again.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from cifar10_kfp.sections import stage_entries
from pipeline.core.errors import ParamsError
from pipeline.core.params import Params, load_params, parse_override, parse_yaml
from pipeline.core.paths import REPO_ROOT

# The sweep pipeline's parameter that holds the trials (a list of mappings).
TRIALS_PARAMETER = "trials"
# What the sweep sets for every trial: a trial may not.
FIXED_KEYS = ("train.device", "mlflow.sweep", "mlflow.experiment_name")
# A sweep is a few dozen trainings at most; a grid's product grows fast.
MAX_TRIALS = 100


def read_trials_file(path: Path) -> list[dict[str, Any]]:
    """The trials of a YAML file: a list of mappings of params keys to values.

    ParamsError (one line) for a missing or unreadable file, bad YAML, or another shape.
    """
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"--trials {label}: file not found") from None
    except IsADirectoryError:
        raise ParamsError(f"--trials {label}: is a folder, not a trials file") from None
    except OSError as exc:
        raise ParamsError(f"--trials {label}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ParamsError(f"--trials {label}: not UTF-8 text") from None
    raw = parse_yaml(text, f"--trials {label}")
    if not isinstance(raw, list):
        raise ParamsError(
            f"--trials {label}: expected a YAML list of trials, each a mapping of params keys "
            f"(e.g. - {{train.learning_rate: 0.002}}), got {type(raw).__name__}"
        )
    for number, trial in enumerate(raw):
        if not isinstance(trial, dict):
            raise ParamsError(
                f"--trials {label}: trial {number} is a {type(trial).__name__}, not a mapping of "
                "params keys to values"
            )
    return raw


def grid_trials(specs: Sequence[str]) -> list[dict[str, Any]]:
    """Every combination of ``--grid KEY=V1,V2,...`` values (the first key varies slowest).

    Values are read like ``--set`` values (YAML 1.2); a list value needs a trials file.
    """
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, text = spec.partition("=")
        if not sep or not key or not text:
            raise ParamsError(f"--grid {spec}: expected KEY=V1,V2,..., e.g. train.seed=1,2,3")
        if key in axes:
            raise ParamsError(f"--grid {spec}: {key} is given twice; list its values once")
        values = [parse_override(f"{key}={item.strip()}")[1] for item in text.split(",")]
        if any(value is None for value in values):
            raise ParamsError(f"--grid {spec}: an empty value; separate values with single commas")
        axes[key] = values
    count = math.prod(len(values) for values in axes.values())
    if count > MAX_TRIALS:
        raise ParamsError(f"--grid makes {count} trials; at most {MAX_TRIALS}")
    return [dict(zip(axes, combination, strict=True)) for combination in _product(axes)]


def _product(axes: Mapping[str, list[Any]]) -> list[tuple[Any, ...]]:
    return list(itertools.product(*axes.values())) if axes else []


def check_parallelism(value: int) -> int:
    """``value`` if it is a usable ParallelFor cap (1 or more), else ParamsError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParamsError(f"--parallelism {value}: must be a whole number of 1 or more")
    return value


def check_trials(
    trials: Sequence[Mapping[str, Any]],
    sweepable: Collection[str],
    validate: Callable[[dict[str, Any]], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The trials with dotted keys and schema-typed values, in their order.

    ``sweepable``: the dotted keys a trial may set. ``validate``: dotted overrides -> every
    sweepable key's value for that trial, typed, ParamsError for a value the schema refuses (it
    sees the rest of the run's values too). Refused, in one line: no trials, more than
    MAX_TRIALS, an unknown or fixed key, a bad value, two trials that train the same thing.
    """
    if not trials:
        raise ParamsError("no trials: a sweep needs at least one (e.g. --grid train.seed=1,2)")
    if len(trials) > MAX_TRIALS:
        raise ParamsError(f"{len(trials)} trials; at most {MAX_TRIALS}")
    checked: list[dict[str, Any]] = []
    seen: dict[tuple[tuple[str, str], ...], int] = {}
    for number, trial in enumerate(trials):
        overrides = {_dotted_key(number, key, sweepable): value for key, value in trial.items()}
        try:
            effective = validate(dict(overrides))
        except ParamsError as exc:
            raise ParamsError(f"trial {number}: {exc}") from None
        typed = {key: effective[key] for key in overrides}
        # Same effective values (2e-3 and 0.002, or a default spelled out) train the same model.
        fingerprint = tuple(sorted((key, repr(value)) for key, value in effective.items()))
        if fingerprint in seen:
            raise ParamsError(
                f"trial {number} trains the same as trial {seen[fingerprint]} "
                f"({_describe(typed)}); drop one"
            )
        seen[fingerprint] = number
        checked.append(typed)
    return checked


def sweepable_keys(params: Params, dvc_file: Path = REPO_ROOT / "dvc.yaml") -> list[str]:
    """The dotted params keys a trial may set: what the train stage reads (dvc.yaml), keys
    inside a nested section (``model.reference.dense_units``) included, less FIXED_KEYS."""
    read = stage_entries("train", dvc_file)
    return [
        key
        for key in _dotted_keys(params.model_dump(by_alias=True))
        # A key inside what train reads, never a whole section (it would hold train.device).
        if "." in key
        and key not in FIXED_KEYS
        and any(key == e or key.startswith(f"{e}.") for e in read)
    ]


def _dotted_keys(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for name, value in values.items():
        keys.append(f"{prefix}{name}")
        if isinstance(value, dict):
            keys += _dotted_keys(value, f"{prefix}{name}.")
    return keys


def dotted_values(values: Mapping[str, Any], keys: Collection[str]) -> dict[str, Any]:
    """The value at each dotted key of nested ``values`` (sections), e.g. from model_dump."""
    found = {}
    for key in keys:
        node: Any = values
        for part in key.split("."):
            node = node[part]
        found[key] = node
    return found


def trial_overrides(text: str) -> dict[str, Any]:
    """A trial as its training receives it (JSON text), its keys checked like submit's."""
    try:
        trial = json.loads(text)
    except (TypeError, ValueError):
        trial = None
    if not isinstance(trial, dict):
        raise ParamsError(f"sweep_trial: expected a JSON object of params overrides, got {text!r}")
    sweepable = sweepable_keys(load_params(REPO_ROOT / "params.yaml"))
    return {_dotted_key(0, key, sweepable): value for key, value in trial.items()}


def _dotted_key(number: int, key: Any, sweepable: Collection[str]) -> str:
    if not isinstance(key, str):
        raise ParamsError(f"trial {number}: key {key!r} is not a params key (e.g. train.seed)")
    dotted = key
    if dotted in FIXED_KEYS:
        raise ParamsError(f"trial {number}: {dotted} is set by the sweep, not by a trial")
    if dotted not in sweepable:
        close = difflib.get_close_matches(dotted, list(sweepable), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ParamsError(
            f"trial {number}: {key} is not a key the train stage reads (model.*, train.*){hint}"
        )
    return dotted


def _describe(trial: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in trial.items()) or "no overrides"


def best_trial(results: Sequence[Mapping[str, Any]]) -> int:
    """The position in ``results`` of the best trial: highest ``val_accuracy``.

    Each result has ``val_accuracy`` and ``val_loss`` (of the epoch whose weights were kept);
    ties go to the lower validation loss, then to the earlier trial. Test figures are never
    looked at: the test set judges the winner once, afterwards. ValueError for no results or a
    result without a finite validation accuracy (its training did not report one).
    """
    if not results:
        raise ValueError("no trial results to pick from")
    for number, result in enumerate(results):
        if not _finite(result.get("val_accuracy")):
            raise ValueError(f"trial result {number} has no validation accuracy")

    def key(number: int) -> tuple[float, float, int]:
        result = results[number]
        loss = result.get("val_loss")
        return (-result["val_accuracy"], loss if _finite(loss) else math.inf, number)

    return min(range(len(results)), key=key)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
