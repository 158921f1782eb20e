"""dvc.yaml: each stage depends on every project module its command imports, so `dvc repro`
reruns a stage whenever code it runs changes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

PACKAGES = ("pipeline", "stages")


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (``pipeline.params`` -> pipeline/params.py), if any."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Every module ``path`` may import: top level and inside functions (lazy imports) alike."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            # `from pipeline import paths` imports the module pipeline.paths.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py too.
    return {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2)}


def has_code(path: Path) -> bool:
    """False for an __init__.py that holds nothing but (at most) a docstring."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def project_imports(module: str) -> set[str]:
    """Repo-relative files of ``module`` and every project module it imports, transitively."""
    seen: set[str] = set()
    files: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        if path.name != "__init__.py" or has_code(path):
            files.add(path.relative_to(REPO_ROOT).as_posix())
        todo.extend(imported_names(path, name) - seen)
    return files


def test_import_walk_sees_lazy_and_from_imports() -> None:
    # stages/train.py imports pipeline.training_run inside run(), and `from pipeline import
    # paths` at the top: both must be found, and what they import in turn.
    found = project_imports("stages.train")
    assert {"stages/train.py", "pipeline/paths.py", "pipeline/training_run.py"} <= found
    assert "pipeline/model.py" in found  # imported by training_run


DVC_STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(DVC_STAGES))
def test_stage_deps_cover_every_module_its_command_imports(stage: str) -> None:
    spec = DVC_STAGES[stage]
    command = spec["cmd"].split()
    assert command[:3] == ["python", "-m", f"stages.{stage}"], "one stage, one stage module"
    deps = {str(dep) for dep in spec["deps"]}
    missing = sorted(project_imports(f"stages.{stage}") - deps)
    assert not missing, f"dvc.yaml stage {stage} runs these modules without depending on them"
