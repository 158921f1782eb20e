"""The docs describe the layout once, and that description names every folder the repo has."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO_ROOT

ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"


def layout_block() -> str:
    """The code block under docs/architecture.md's "## Layout" heading."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def tracked_top_level_folders() -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return {path.split("/", 1)[0] for path in listed if "/" in path} - {".dvc"}


def test_the_layout_names_every_top_level_folder_and_pipeline_subpackage() -> None:
    block = layout_block()
    found = re.findall(r"(?<![\w./-])([.\w-]+(?:/[\w-]+)?)/", block)
    named = set(found) | {name.split("/")[0] for name in found}
    folders = tracked_top_level_folders()
    packages = {
        f"pipeline/{init.parent.name}" for init in (REPO_ROOT / "pipeline").glob("*/__init__.py")
    }
    assert folders, "git ls-files listed no folder"
    missing = sorted((folders | packages) - named)
    assert not missing, f"docs/architecture.md's Layout does not name: {missing}"


def test_the_layout_is_described_once() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Layout" not in readme, "README repeats the layout: link docs/architecture.md"
    assert len(readme.splitlines()) <= 150
