"""The docs against the repository: every test, file and module they name exists, and they describe the project,
not how it was made. Pure text, no imports of maporl: milliseconds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "maporl"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
CONFIGS = sorted((PACKAGE / "configs").glob("*.yaml"))
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# A repository path as the docs quote it: a top-level folder, then a file with one of these extensions.
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:src/maporl|bench|tests|scripts|configs|docs|constraints|results)/[\w./-]*?"
    r"\.(?:py|sh|yaml|md|txt|jsonl|json|toml))(?![\w/-])"
)
# A markdown link to a file of the repository, relative to the page: [text](path) or [text](path#anchor).
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
# A test function's name as quoted in prose or a node id (`test_x`, `tests/test_a.py::test_x`, `test_sft_*`);
# test file and script names (`test_ray.py`, `test_lowest.sh`) are checked as paths, not here.
TEST_NAME = re.compile(r"(?<![\w/.-])(test_\w+\*?)(?![\w.*/-])")
# Words about how the project was made, not what it is. Ray's own sessions (`ray_session`, "Ray session",
# tests/test_ray_session.py) are a Ray concept and are taken out first.
RAY_SESSION = re.compile(r"\bray[ _]session\w*|\w*_ray_session\w*", re.IGNORECASE)
URL = re.compile(r"https?://\S+")
PROCESS_WORDS = re.compile(
    r"session|the issue|\bissues?\b|our choice \(brief\)|\bbrief\b|device time|abstract could be read"
    r"|waits for a session|GPU machine lent",
    re.IGNORECASE,
)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _defined_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").glob("**/*.py"):
        names.update(re.findall(r"^\s*(?:async\s+)?def (test_\w+)\s*\(", _read(path), re.MULTILINE))
    return names


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_quoted_test_name_exists():
    defined = _defined_tests()
    missing = []
    for doc in DOCS:
        for name in set(TEST_NAME.findall(_read(doc))):
            if name.endswith("*"):
                found = any(d.startswith(name[:-1]) for d in defined)
            else:
                found = name in defined
            if not found:
                missing.append(f"{_rel(doc)}: {name}")
    assert not missing, "tests named in the docs that no test file defines:\n" + "\n".join(sorted(missing))


def test_every_quoted_repository_path_exists():
    missing = []
    for doc in DOCS:
        text = _read(doc)
        for path in set(REPO_PATH.findall(text)):
            if not (ROOT / path).exists():
                missing.append(f"{_rel(doc)}: {path}")
        for target in set(LINK.findall(text)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            if not (doc.parent / target).exists():
                missing.append(f"{_rel(doc)}: link {target}")
    assert not missing, "paths quoted in the docs that do not exist:\n" + "\n".join(sorted(missing))


def _architecture_names() -> set[str]:
    """Every module (`x.py`, `folder/x.py`) and folder (`folder/`) docs/architecture.md names."""
    text = _read(ARCHITECTURE)
    names = set(re.findall(r"(?<![\w./-])((?:[A-Za-z_][\w-]*/)*[A-Za-z_]\w*\.(?:py|yaml|sh))(?![\w-])", text))
    names |= set(re.findall(r"`((?:[A-Za-z_][\w-]*/)+)`", text))
    return names


def test_architecture_names_only_files_that_exist():
    names = _architecture_names()
    assert len(names) > 30, "docs/architecture.md should name the file of every stage"
    missing = [n for n in sorted(names) if not ((PACKAGE / n).exists() or (ROOT / n).exists())]
    assert not missing, "docs/architecture.md names files that do not exist (under src/maporl/ or the root):\n" + (
        "\n".join(missing)
    )


@pytest.mark.parametrize("path", DOCS + CONFIGS, ids=lambda p: _rel(p))
def test_no_words_about_how_the_project_was_made(path):
    hits = []
    for number, line in enumerate(_read(path).splitlines(), 1):
        cleaned = RAY_SESSION.sub("", URL.sub("", line))
        match = PROCESS_WORDS.search(cleaned)
        if match:
            hits.append(f"{_rel(path)}:{number}: {match.group(0)!r} in {line.strip()[:120]}")
    assert not hits, "\n".join(hits)


def test_the_patterns_tell_legit_words_apart():
    assert not PROCESS_WORDS.search(RAY_SESSION.sub("", "a Ray session; ray_session(cfg); tests/test_ray_session.py"))
    assert PROCESS_WORDS.search("run in three sessions")
    assert PROCESS_WORDS.search("our choice (brief): one adapter")
    assert TEST_NAME.findall("`tests/test_training.py::test_sft_*`, `test_ray.py`, scripts/test_lowest.sh") == [
        "test_sft_*"
    ]
    assert REPO_PATH.findall("see `src/maporl/trainer.py`, bench/memory.py. And runs/x.py") == [
        "src/maporl/trainer.py",
        "bench/memory.py",
    ]
