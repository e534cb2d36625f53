"""Tracker: metrics.jsonl always, TensorBoard and W&B on request; each backend's output is read back from disk."""

from __future__ import annotations

import json
import struct
import sys
import time
import types
import zlib
from pathlib import Path

import pytest

from maporl.errors import UsageError
from maporl.tracking import REPORTERS, WANDB_ID_FILE, Tracker

CONFIG = {"seed": 0, "train": {"max_steps": 4, "report_to": ["wandb"]}}


def train_row(step: int, scale: float = 1.0) -> dict:
    # A string and a bool ride along: they belong in jsonl only.
    return {"step": step, "reward/mean": 0.25 * step * scale, "loss/policy": -1.5 * step * scale, "steps": step * 10,
            "train/acc/turn0": step / 8, "agent": "a0", "done": False}  # fmt: skip


def expected_scalars(row: dict) -> dict[str, float]:
    return {k: v for k, v in row.items() if k not in ("step", "agent", "done")}


# --- reading back what each backend wrote ----------------------------------------------------------------------------


def read_tensorboard(run_dir: Path) -> dict[int, dict[str, float]]:
    """{step: {tag: value}} as TensorBoard itself shows it (EventAccumulator applies purge_step across files)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    out: dict[int, dict[str, float]] = {}
    for tag in acc.Tags()["scalars"]:
        for event in acc.Scalars(tag):
            assert tag not in out.get(event.step, {}), f"{tag} shown twice at step {event.step}"
            out.setdefault(event.step, {})[tag] = event.value
    return out


def flat(rows: dict[int, dict[str, float]]) -> dict[tuple[int, str], float]:
    # pytest.approx compares flat mappings only.
    return {(step, key): value for step, row in rows.items() for key, value in row.items()}


def next_second(timestamp: str) -> None:
    """Wait until the clock is past `timestamp`'s second.

    TensorBoard orders event files, and W&B names offline runs, by the start time in whole seconds: a real resume is a
    later process; a test's resume must start in a later second too.
    """
    while time.strftime("%Y%m%d_%H%M%S") <= timestamp:
        time.sleep(0.05)


def wandb_records(path: Path):
    """The protobuf records of a .wandb file.

    wandb 0.31 ships no Python reader (the old wandb.sdk.internal.datastore is gone; wandb-core, in Go, writes the
    file), so this is the format itself: LevelDB's log format behind a 7-byte ':W&B' header, 32 KiB blocks, each record
    split into chunks with a 7-byte (crc32, length, type) header.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer / zero padding
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc
        pos += 7 + length
        pending += chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_wandb(run_file: Path) -> tuple[dict[int, dict[str, float]], dict]:
    """({step: {key: value}} of the history rows, {"run_id", "config", "exit_code"}) of one offline run."""
    history: dict[int, dict[str, float]] = {}
    info: dict = {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            assert record.history.step.num not in history, "step logged twice"
            history[record.history.step.num] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind == "run":
            info["run_id"] = record.run.run_id
            info["config"] = {i.key: json.loads(i.value_json) for i in record.run.config.update if i.key != "_wandb"}
        elif kind == "exit":
            info["exit_code"] = record.exit.exit_code
    return history, info


def offline_runs(run_dir: Path, timeout: float = 30.0) -> list[Path]:
    """The offline run files under `run_dir`, once each holds its exit record. wandb-core writes them in its own
    process and can still be flushing when `finish` has returned (seen under load: an empty read, then the full
    file a moment later)."""
    deadline = time.time() + timeout
    while True:
        runs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        if all(_finished(r) for r in runs) or time.time() > deadline:
            return runs
        time.sleep(0.05)


def _finished(run_file: Path) -> bool:
    from google.protobuf.message import DecodeError

    try:
        return any(record.WhichOneof("record_type") == "exit" for record in wandb_records(run_file))
    except (AssertionError, struct.error, DecodeError):  # still being written: a short header, a half record
        return False


# --- jsonl -----------------------------------------------------------------------------------------------------------


def test_jsonl_rows_are_appended_flushed_and_read_back(tmp_path):
    rows = [train_row(1), train_row(2), {"step": 2, "eval/acc/turn0": 0.5, "eval/acc/turn1": 0.75}]
    with Tracker(tmp_path, ["jsonl"], CONFIG, "r") as tracker:
        tracker.log(rows[0])
        # Flushed per row: a run killed now still has it.
        assert (tmp_path / "metrics.jsonl").read_text() == json.dumps(rows[0]) + "\n"
        tracker.log(rows[1])
    with Tracker(tmp_path, [], CONFIG, "r", resume_step=2) as tracker:  # jsonl is on even when not listed
        tracker.log(rows[2])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines == [json.dumps(r) for r in rows]
    assert [json.loads(line) for line in lines] == rows
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "wandb").exists()


def test_unknown_backend_is_a_one_line_usage_error(tmp_path):
    with pytest.raises(UsageError) as e:
        Tracker(tmp_path, ["jsonl", "tensorbord"], CONFIG, "r")
    msg = str(e.value)
    assert "\n" not in msg and "'tensorbord'" in msg and "did you mean 'tensorboard'" in msg
    assert all(name in msg for name in REPORTERS)


# --- TensorBoard -----------------------------------------------------------------------------------------------------


def test_tensorboard_scalars_read_back(tmp_path):
    rows = [train_row(s) for s in (1, 2, 3)]
    with Tracker(tmp_path, ["jsonl", "tensorboard"], CONFIG, "r") as tracker:
        for row in rows:
            tracker.log(row)
        tracker.log({"step": 3, "eval/acc/turn0": 0.5})
    want = {row["step"]: expected_scalars(row) for row in rows}
    want[3]["eval/acc/turn0"] = 0.5
    assert flat(read_tensorboard(tmp_path)) == pytest.approx(flat(want), rel=1e-6)  # float32 on disk
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_tensorboard_resume_hides_the_crashed_attempts_redone_steps(tmp_path):
    with Tracker(tmp_path, ["tensorboard"], CONFIG, "r") as tracker:
        for step in (1, 2, 3, 4):
            tracker.log(train_row(step))
    (event_file,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    next_second(time.strftime("%Y%m%d_%H%M%S", time.localtime(int(event_file.name.split(".")[3]))))
    with Tracker(tmp_path, ["tensorboard"], CONFIG, "r", resume_step=2) as tracker:
        for step in (3, 4):
            tracker.log(train_row(step, scale=10.0))
    want = {1: train_row(1), 2: train_row(2), 3: train_row(3, 10.0), 4: train_row(4, 10.0)}
    assert flat(read_tensorboard(tmp_path)) == pytest.approx(flat({s: expected_scalars(r) for s, r in want.items()}))


# --- W&B (offline) ---------------------------------------------------------------------------------------------------


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """Offline W&B with every file it writes under tmp_path, and its service process gone after the test."""
    wandb = pytest.importorskip("wandb")
    home = tmp_path / "wandb-home"
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": home, "WANDB_CACHE_DIR": home,
                       "WANDB_CONFIG_DIR": home, "WANDB_DATA_DIR": home, "WANDB_ARTIFACT_DIR": home,
                       # No system monitor: it would sample this machine (and probe cloud metadata addresses).
                       "WANDB__DISABLE_STATS": "true", "WANDB__DISABLE_MACHINE_INFO": "true",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}.items():  # fmt: skip
        monkeypatch.setenv(var, str(value))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    yield wandb
    wandb.teardown()  # stops the wandb-core service this test started


def test_wandb_offline_scalars_read_back(tmp_path, wandb_offline):
    run_dir = tmp_path / "run"
    rows = [train_row(s) for s in (1, 2, 3)]
    with Tracker(run_dir, ["jsonl", "wandb"], CONFIG, "my-run") as tracker:
        for row in rows:
            tracker.log(row)
        tracker.log({"step": 3, "eval/acc/turn0": 0.5})  # an eval row at a training row's step joins that row
    (run_file,) = offline_runs(run_dir)
    history, info = read_wandb(run_file)
    want = {row["step"]: expected_scalars(row) for row in rows}
    want[3]["eval/acc/turn0"] = 0.5
    assert history == want  # JSON carries the exact floats
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    assert info == {"run_id": run_id, "config": CONFIG, "exit_code": 0}
    assert run_file.name == f"run-{run_id}.wandb"


def test_wandb_resume_continues_the_saved_run_id(tmp_path, wandb_offline):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError), Tracker(run_dir, ["wandb"], CONFIG, "r") as tracker:
        for step in (1, 2, 3, 4):
            tracker.log(train_row(step))
        raise RuntimeError("crash after step 4; the last checkpoint is step 2")
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    next_second(offline_runs(run_dir)[0].parent.name.split("-")[2])
    with Tracker(run_dir, ["wandb"], CONFIG, "r", resume_step=2) as tracker:
        for step in (3, 4, 5):
            tracker.log(train_row(step))
    first, second = (read_wandb(path) for path in offline_runs(run_dir))
    assert first == ({s: expected_scalars(train_row(s)) for s in (1, 2, 3, 4)}, {"run_id": run_id, "config": CONFIG,
                                                                                    "exit_code": 1})  # fmt: skip
    # Offline, W&B cannot tell which steps the crashed attempt logged: the redone steps 3-4 are logged again, with the
    # same values (resume is bit-exact).
    assert second == ({s: expected_scalars(train_row(s)) for s in (3, 4, 5)}, {"run_id": run_id, "config": CONFIG,
                                                                                 "exit_code": 0})  # fmt: skip
    assert all(path.name == f"run-{run_id}.wandb" for path in offline_runs(run_dir))

    # A fresh run in the same directory is a new W&B run.
    Tracker(run_dir, ["wandb"], CONFIG, "r").close()
    assert (run_dir / WANDB_ID_FILE).read_text().strip() != run_id


def test_wandb_resume_skips_steps_the_server_already_has(tmp_path, monkeypatch):
    """Online, W&B says where the resumed run's next step is; rows below it are the crashed attempt's, not re-sent."""
    calls: dict = {"log": [], "finish": []}
    run = types.SimpleNamespace(step=5, log=lambda data, step: calls["log"].append(step),
                                finish=lambda exit_code: calls["finish"].append(exit_code))  # fmt: skip

    def init(**kwargs):
        calls["init"] = kwargs
        return run

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, Settings=dict))
    (tmp_path / WANDB_ID_FILE).write_text("abc123\n")
    with Tracker(tmp_path, ["wandb"], CONFIG, "r", resume_step=2) as tracker:
        for step in (3, 4, 5, 6):
            tracker.log(train_row(step))
    assert calls["log"] == [5, 6] and calls["finish"] == [0]
    assert calls["init"]["id"] == "abc123" and calls["init"]["resume"] == "allow"
    assert calls["init"]["project"] == "maporl" and calls["init"]["dir"] == str(tmp_path)


# --- missing extras --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_missing_extra_is_a_one_line_usage_error(tmp_path, monkeypatch, backend):
    # None in sys.modules makes `import` raise ImportError, as if the package were not installed.
    for name in (backend, "torch.utils.tensorboard") if backend == "tensorboard" else (backend,):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UsageError) as e:
        Tracker(tmp_path, ["jsonl", backend], CONFIG, "r")
    msg = str(e.value)
    assert "\n" not in msg and f"pip install 'maporl[{backend}]'" in msg and "train.report_to" in msg


# --- the trainer's rows ----------------------------------------------------------------------------------------------


def test_training_reports_every_row_to_tensorboard_and_wandb(tmp_path, tiny_model_dir, wandb_offline):
    from conftest import metric_rows, tiny_cfg

    from maporl import trainer

    run = tmp_path / "run"
    cfg = tiny_cfg(tiny_model_dir, "train.report_to=[jsonl,tensorboard,wandb]", "train.checkpoint_every=1")
    trainer.train(cfg, run, quiet=True)
    rows = metric_rows(run)  # 2 step rows, then the final evaluation's row at step 2
    expected: dict[int, dict[str, float]] = {}
    for row in rows:
        expected.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k != "step"})
    assert "eval/acc/turn1" in expected[2] and "loss/policy" in expected[1]
    assert flat(read_tensorboard(run)) == pytest.approx(flat(expected))
    (run_file,) = offline_runs(run)
    history, info = read_wandb(run_file)
    assert flat(history) == pytest.approx(flat(expected))
    assert info["config"]["train"]["report_to"] == ["jsonl", "tensorboard", "wandb"]
    # --resume continues the same W&B run: a second offline run directory under the saved id.
    next_second(run_file.parent.name.split("-")[2])
    trainer.train(
        tiny_cfg(tiny_model_dir, "train.report_to=[wandb]", "train.max_steps=3"), run, resume=True, quiet=True
    )
    runs = offline_runs(run)
    assert len(runs) == 2 and {read_wandb(r)[1]["run_id"] for r in runs} == {(run / WANDB_ID_FILE).read_text().strip()}
    assert 3 in read_wandb(runs[1])[0]
