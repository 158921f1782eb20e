"""dvc.yaml: each stage depends on every project module its command imports, so `dvc repro`
reruns a stage whenever code it runs changes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

PACKAGES = ("pipeline", "stages")
# How a package imports all of its modules without naming them.
DISCOVERY = "pkgutil.iter_modules(__path__)"


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (``pipeline.core.params`` -> its .py), if any."""
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
            # `from pipeline.core import paths` imports the module pipeline.core.paths.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    if path.name == "__init__.py" and DISCOVERY in path.read_text(encoding="utf-8"):
        # A registry that imports every module of its folder (pipeline/train/architectures).
        names.update(f"{module}.{child.stem}" for child in path.parent.glob("[!_]*.py"))
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
    # stages/train.py imports pipeline.train.train inside run(), and `from pipeline.core import
    # paths` at the top: both must be found, and what they import in turn.
    found = project_imports("stages.train")
    assert {"stages/train.py", "pipeline/core/paths.py", "pipeline/train/train.py"} <= found
    assert "pipeline/train/model.py" in found  # imported by pipeline/train/train.py


def test_import_walk_sees_the_modules_a_registry_discovers() -> None:
    # The schema imports the architectures' registry, which imports each module of its folder
    # by discovery (no import statement names them): every stage runs them.
    found = project_imports("stages.download")
    assert {"pipeline/core/params.py", "pipeline/train/architectures/__init__.py"} <= found
    modules = (REPO_ROOT / "pipeline/train/architectures").glob("[!_]*.py")
    assert {path.relative_to(REPO_ROOT).as_posix() for path in modules} <= found


DVC_STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
# Code a stage runs without importing it: the logged model's code file, copied into every
# MLflow model and executed when the model is loaded (pipeline/tracking/serving.py names it).
LOADED_BY_PATH = {"pipeline/tracking/serving_model.py"}


def code_deps(deps: list[str]) -> list[str]:
    """The deps of a stage that are project code: a .py file or a folder of the packages."""
    return [dep for dep in deps if dep.endswith(".py") or (REPO_ROOT / dep).is_dir()]


def covered_by(module: str, dep: str) -> bool:
    """Whether dvc.yaml dep ``dep`` (a file or a folder) covers the file ``module``."""
    return module == dep or module.startswith(dep.rstrip("/") + "/")


def unused_deps(deps: list[str], imported: set[str]) -> list[str]:
    """The code deps under which no imported module lies."""
    return [dep for dep in code_deps(deps) if not any(covered_by(m, dep) for m in imported)]


def uncovered_modules(deps: list[str], imported: set[str]) -> list[str]:
    """The imported modules that no dep covers."""
    return sorted(m for m in imported if not any(covered_by(m, dep) for dep in deps))


@pytest.mark.parametrize("stage", sorted(DVC_STAGES))
def test_stage_deps_cover_every_module_its_command_imports(stage: str) -> None:
    spec = DVC_STAGES[stage]
    command = spec["cmd"].split()
    assert command[:3] == ["python", "-m", f"stages.{stage}"], "one stage, one stage module"
    missing = uncovered_modules(spec["deps"], project_imports(f"stages.{stage}"))
    assert not missing, f"dvc.yaml stage {stage} runs these modules without depending on them"


@pytest.mark.parametrize("stage", sorted(DVC_STAGES))
def test_stage_lists_no_code_it_does_not_run(stage: str) -> None:
    imported = project_imports(f"stages.{stage}") | LOADED_BY_PATH
    unused = unused_deps(DVC_STAGES[stage]["deps"], imported)
    assert not unused, f"dvc.yaml stage {stage} depends on code it never imports: {unused}"


def test_the_check_fails_on_an_unused_and_on_a_missing_dep() -> None:
    # The check itself, on the train stage's real closure: an extra folder and a dropped one.
    imported = project_imports("stages.train")
    deps = [*DVC_STAGES["train"]["deps"], "pipeline/compare"]
    assert unused_deps(deps, imported) == ["pipeline/compare"]
    deps = [dep for dep in DVC_STAGES["train"]["deps"] if dep != "pipeline/train"]
    assert "pipeline/train/model.py" in uncovered_modules(deps, imported)


def test_train_and_evaluate_do_not_depend_on_the_archive_reader() -> None:
    # Editing how the archive is decoded must rerun preprocess, not retrain.
    for stage in ("train", "evaluate"):
        deps = DVC_STAGES[stage]["deps"]
        assert not any(covered_by("pipeline/data/cifar.py", dep) for dep in deps), stage


def test_loaded_by_path_files_are_named_by_the_code_that_loads_them() -> None:
    serving = (REPO_ROOT / "pipeline/tracking/serving.py").read_text()
    for path in LOADED_BY_PATH:
        assert (REPO_ROOT / path).is_file()
        assert Path(path).name in serving


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_every_module_in_a_costly_stage_s_folders_is_one_it_runs(stage: str) -> None:
    # A module dropped into pipeline/train or pipeline/tracking that the stage never imports
    # (a command-line helper, say) would still retrain on every edit. Preprocess may rerun for
    # nothing: its outputs come out the same, so nothing downstream reruns.
    imported = project_imports(f"stages.{stage}") | LOADED_BY_PATH
    folders = [dep for dep in code_deps(DVC_STAGES[stage]["deps"]) if (REPO_ROOT / dep).is_dir()]
    idle = sorted(
        path.relative_to(REPO_ROOT).as_posix()
        for folder in folders
        for path in (REPO_ROOT / folder).rglob("*.py")
        if path.name != "__init__.py" and path.relative_to(REPO_ROOT).as_posix() not in imported
    )
    assert not idle, f"dvc.yaml stage {stage} reruns when these change, but never runs them"
