"""Hugging Face Hub names: models and exported teams resolve through the local Hub cache (never downloaded), a name
the cache lacks is one line saying how to fetch it, and `maporl export --push-to-hub` uploads (against a fake HfApi:
no network here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import pytest
from test_export import same_evaluation, trained_run

from maporl import api, checkpoint
from maporl.cli.commands import main
from maporl.errors import UsageError
from maporl.models import resolve_model_dir
from maporl.serving import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hub cache; `put(repo_id, folder)` lays `folder` out in it as `hf download` would."""
    root = tmp_path / "hub_cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))

    def put(repo_id: str, folder):
        repo = root / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder, repo / "snapshots" / COMMIT)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)
        return repo / "snapshots" / COMMIT

    return put


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    return trained_run(tiny_model_dir, tmp_path_factory.mktemp("run"), "train.max_steps=1")


def test_a_hub_name_is_a_model_in_the_cache(cache, tiny_model_dir, tmp_path, monkeypatch):
    snapshot = cache("org/tiny", tiny_model_dir)
    assert resolve_model_dir("org/tiny") == snapshot
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "org" / "tiny")  # a local folder of the same name wins
    assert resolve_model_dir("org/tiny").resolve() == (tmp_path / "org" / "tiny").resolve()


def test_a_team_trains_and_evaluates_on_a_hub_name(cache, tiny_model_dir, tmp_path, capsys):
    cache("org/tiny", tiny_model_dir)
    run = trained_run("org/tiny", tmp_path / "run", "train.max_steps=1")
    assert checkpoint.resolve(str(run))[0]["model"]["name_or_path"] == "org/tiny"
    small = ["--problems", "2", "--num-agents", "2", "--turns", "1", "generation.max_new_tokens=4"]
    assert main(["eval", "--checkpoint", "org/tiny", *small, "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    assert "model /" in capsys.readouterr().out  # the snapshot folder the name stands for


def test_a_name_the_cache_lacks_is_one_line(cache, tmp_path, capsys):
    with pytest.raises(UsageError) as e:
        resolve_model_dir("org/missing")
    message = str(e.value)
    assert "\n" not in message and "org/missing" in message and "hf download org/missing" in message
    for argv in (["eval", "--checkpoint", "org/missing"], ["eval", "model.name_or_path=org/missing"]):
        assert main([*argv, "--out", str(tmp_path / "eval"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "hf download org/missing" in err, err


def test_an_export_on_the_hub_is_a_checkpoint(cache, run, tmp_path):
    """`hf download org/team` of a pushed export, then --checkpoint org/team: the run's discussions."""
    api.evaluate(run, out=tmp_path / "eval_run")
    main(["export", str(run), "--out", str(tmp_path / "export")])
    cache("org/team", tmp_path / "export")
    api.evaluate("org/team", out=tmp_path / "eval_hub")
    same_evaluation(tmp_path / "eval_run", tmp_path / "eval_hub")


class FakeApi:
    """Records what an upload would do; `fail` makes every call raise as an unauthenticated one does."""

    calls: list = []
    fail: Exception | None = None

    def create_repo(self, repo_id, **kwargs):
        self._record("create_repo", repo_id=repo_id, **kwargs)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        self._record("upload_folder", files=sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()), **kwargs)

    def _record(self, name, **kwargs):
        if FakeApi.fail is not None:
            raise FakeApi.fail
        FakeApi.calls.append((name, kwargs))


@pytest.fixture
def fake_api(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    FakeApi.calls, FakeApi.fail = [], None
    return FakeApi


def test_push_to_hub_uploads_the_export(fake_api, run, tmp_path, capsys):
    out = tmp_path / "team"
    assert main(["export", str(run), "--out", str(out), "--push-to-hub", "me/team", "--private"]) == 0
    (create, created), (upload, uploaded) = fake_api.calls
    assert create == "create_repo" and created == {
        "repo_id": "me/team",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    assert upload == "upload_folder" and uploaded["repo_id"] == "me/team" and uploaded["folder_path"] == str(out)
    assert {"team.json", "README.md", "config.yaml", "agent_0"} <= set(uploaded["files"])
    card = (out / "README.md").read_text()
    assert "maporl eval --checkpoint me/team" in card and "hf download me/team --local-dir team" in card
    assert "pushed: https://huggingface.co/me/team" in capsys.readouterr().out


def test_a_push_that_fails_is_one_line(fake_api, run, tmp_path, capsys, monkeypatch):
    fake_api.fail = OSError("401 Client Error: Unauthorized for url\nmore detail")
    assert main(["export", str(run), "--out", str(tmp_path / "a"), "--push-to-hub", "me/team"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "401 Client Error" in err and "hf auth login" in err, err
    assert (tmp_path / "a" / "team.json").is_file()  # the export is kept: `hf upload` later sends it
    fake_api.fail = None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for repo, why in (("me/team", "HF_HUB_OFFLINE"), ("not-a-name", "not a Hub repository name")):
        assert main(["export", str(run), "--out", str(tmp_path / "b"), "--push-to-hub", repo]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err
    assert not (tmp_path / "b").exists() and fake_api.calls == []  # refused before writing or uploading


def test_hub_names_and_folders_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_hub_name("Qwen/Qwen2.5-0.5B-Instruct") and hub.is_hub_name("runs/tiny")
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    assert not hub.is_hub_name("runs/tiny")  # an existing folder is a folder
    for text in ("/abs/path", "./org/name", "~/org/name", "a/b/c", "org/../x", "embedded", "org/name.git"):
        assert not hub.is_hub_name(text), text
