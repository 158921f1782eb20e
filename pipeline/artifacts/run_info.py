"""``models/run.json``: the hand-off from the train stage to the evaluate stage.

Which MLflow run trained ``models/model.keras``, where that run lives, and the class names the
model was trained on. Written and read only here, so both sides agree on its keys.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipeline.core.atomic import write_json
from pipeline.core.errors import PipelineError
from pipeline.core.paths import MODEL_FILE, RUN_INFO_FILE


@dataclass(frozen=True)
class RunInfo:
    """Which MLflow run trained the model beside it."""

    run_id: str
    experiment_id: str
    model_uri: str
    tracking_uri: str
    classes: list[str]
    # md5 of the model.keras written beside it: evaluate scores only the model this run logged.
    model_md5: str


def write_run_info(path: Path, info: RunInfo) -> None:
    """Atomically write ``info`` as JSON to ``path``."""
    write_json(path, asdict(info))


def read_run_info(models_dir: Path) -> RunInfo:
    """Read ``run.json`` beside the model; missing train outputs say to run the train stage."""
    for name in (MODEL_FILE, RUN_INFO_FILE):
        if not (models_dir / name).is_file():
            raise PipelineError(
                f"{models_dir / name} not found: the model is not trained yet; "
                "run `dvc repro train`"
            )
    path = models_dir / RUN_INFO_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc}); rerun `dvc repro train`") from None
    keys = [field.name for field in fields(RunInfo)]
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        raise PipelineError(f"{path}: missing {', '.join(missing)}; rerun `dvc repro train`")
    return RunInfo(**{key: data[key] for key in keys})
