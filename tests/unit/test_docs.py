"""Docs made from a source in the repo stay in step with it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_architecture_diagram_is_rendered_from_its_source():
    if not shutil.which("dot"):
        pytest.fail("Graphviz missing: make test-deps installs it")
    svg = subprocess.run(["dot", "-Tsvg", str(REPO / "docs" / "architecture.dot")], capture_output=True,
                         check=True).stdout
    assert svg == (REPO / "docs" / "architecture.svg").read_bytes(), "run `make docs`"


def test_the_readme_shows_the_diagram():
    assert "docs/architecture.svg" in (REPO / "README.md").read_text()
