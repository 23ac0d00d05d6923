"""The README's table of floors is the import-linter contract of pyproject.toml, which `lint-imports` checks the
code against in .ci/run: a floor added, removed or moved in one is moved in the other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def contract_floors() -> list[set[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["id"] == "floors")
    assert contract["containers"] == ["mlflow_gcp"] and contract["exhaustive"]
    return [{name.strip() for name in layer.split("|")} for layer in contract["layers"] if layer != "__main__"]


def readme_floors() -> list[set[str]]:
    section = (ROOT / "README.md").read_text().split("\n## Where things live\n", 1)[1].split("\n## ", 1)[0]
    floors = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)]
        if len(cells) > 3 and cells[1].isdigit():
            assert int(cells[1]) == len(floors) + 1, f"floors out of order at {line!r}"
            floors.append(set(re.findall(r"`([a-z_]+)(?:/|\.py)`", cells[2])))
    return floors


def test_the_readme_says_the_floors_of_the_contract():
    assert readme_floors() == contract_floors()
