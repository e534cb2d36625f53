"""What `pip install maporl` gets: ranges, not pins, in the metadata; CI's exact set and the lowest-versions set inside
them; the vllm extra's release inside them too; and the package data (embedded base, recipes) present in the tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPENDENCIES = {Requirement(r).name: Requirement(r) for r in PROJECT["project"]["dependencies"]}
# vLLM 0.33.0's own requirements on the packages of the window (its wheel's METADATA, Requires-Dist).
VLLM_033 = {"torch": "2.14.0", "transformers": ["5.16.1", "5.20.2"]}


def pins(name: str) -> dict[str, str]:
    lines = (ROOT / "constraints" / name).read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))


def test_dependencies_are_ranges_with_a_next_major_cap_where_a_break_is_likely():
    for name, req in DEPENDENCIES.items():
        assert "==" not in str(req.specifier), f"{name} is pinned exactly: a GPU user's torch would be replaced"
    for name in ("torch", "transformers", "peft"):
        assert any(s.operator == "<" for s in DEPENDENCIES[name].specifier), f"{name} has no upper bound"


def test_ci_and_lowest_sets_fall_inside_the_window():
    ci, lowest = pins("cpu.txt"), pins("lowest.txt")
    for name, req in DEPENDENCIES.items():
        key = next(k for k in ci if k.lower().replace("_", "-") == name)
        assert req.specifier.contains(ci[key], prereleases=True), f"constraints/cpu.txt: {name}=={ci[key]}"
    for name in ("transformers", "peft", "safetensors", "tokenizers", "pyyaml", "rich", "numpy", "matplotlib"):
        lower = next(s.version for s in DEPENDENCIES[name].specifier if s.operator == ">=")
        assert Version(lowest[name]) == Version(lower), f"constraints/lowest.txt tests {name} at its lower bound"


def test_the_vllm_extra_names_one_release_whose_requirements_fit_the_window():
    (extra,) = [Requirement(r) for r in PROJECT["project"]["optional-dependencies"]["vllm"]]
    assert str(extra.specifier) == "==0.33.0"
    assert DEPENDENCIES["torch"].specifier.contains(VLLM_033["torch"])
    assert all(DEPENDENCIES["transformers"].specifier.contains(v) for v in VLLM_033["transformers"][1:])


@pytest.mark.parametrize("pattern", PROJECT["tool"]["setuptools"]["package-data"]["maporl"])
def test_package_data_names_files_that_exist(pattern):
    assert list((ROOT / "src" / "maporl").glob(pattern)), f"package data {pattern!r} matches nothing"


def test_the_shipped_recipes_are_in_the_package():
    from maporl.config_parse import shipped_configs

    assert {"tiny", "paper_gsm8k", "paper_anli"} <= set(shipped_configs())
    assert re.search(r"configs/\*\.yaml", (ROOT / "pyproject.toml").read_text())
