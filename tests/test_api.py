"""The Python API: `import maporl` stays light, and the README's example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_import_maporl_loads_no_torch_and_every_name_resolves():
    code = (
        "import sys, maporl\n"
        "assert 'torch' not in sys.modules, 'import maporl loaded torch'\n"
        "for name in maporl.__all__:\n"
        "    getattr(maporl, name)\n"
        "assert callable(maporl.evaluate) and not isinstance(maporl.evaluate, type(sys)), maporl.evaluate\n"
        "assert maporl.compare.__name__ == 'compare_runs'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)  # the project's own example, not model output
    assert scope["run"]["steps"] == 2 and len(scope["run"]["eval"]["acc_per_turn"]) == 3
    assert len(scope["base"]["acc_per_turn"]) == 3
    assert len(scope["transcript"].answers) == 3 and len(scope["transcript"].answers[-1]) == 3
    assert [row["turn"] for row in scope["paired"]["turns"]] == [0, 1, 2]
    assert (tmp_path / "runs" / "api-example" / "eval.json").is_file()
