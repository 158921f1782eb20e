"""The library's layers: tracking stands below train, and the schema loads no Keras.

pipeline/tracking tags runs and logs served models with facts about the Keras backend; those
facts live in pipeline/core/keras_backend.py, below both, so tracking never imports the trainer.
The schema (pipeline/core/params.py) imports the architecture modules, which declare their own
params sections: none may import Keras at import time, or a params error would load TensorFlow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_dvc_deps import imported_names

HEAVY = ("keras", "tensorflow", "jax")


def train_imports(path: Path, module: str) -> list[str]:
    """The modules of pipeline.train that ``path`` imports itself, lazily or at the top."""
    return sorted(
        name for name in imported_names(path, module) if name.startswith("pipeline.train")
    )


def test_no_tracking_module_imports_the_trainer() -> None:
    offenders = {}
    for path in sorted((REPO_ROOT / "pipeline" / "tracking").glob("*.py")):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        if imports := train_imports(path, module):
            offenders[path.name] = imports
    assert not offenders


def test_the_check_sees_a_lazy_import_of_the_trainer(tmp_path: Path) -> None:
    # What lineage.py did before the backend facts moved: the check must catch it.
    source = tmp_path / "lineage.py"
    source.write_text("def tags():\n    from pipeline.train import backend\n")
    assert "pipeline.train.backend" in train_imports(source, "pipeline.tracking.lineage")


def loaded_after(statement: str) -> list[str]:
    code = f"import sys; {statement}; print(*[m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_the_schema_and_the_architectures_registry_load_no_keras() -> None:
    assert loaded_after("import pipeline.core.params, pipeline.train.architectures") == []


@pytest.mark.keras
def test_the_probe_sees_keras_when_a_module_loads_it() -> None:
    # The probe above can fail: the model builder does load Keras (and its backend).
    assert "keras" in loaded_after("import pipeline.train.model")
