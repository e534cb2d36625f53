"""How a backend=ray driver starts or joins its cluster (`ray_session`): an empty ray.address starts a private local
instance, never a cluster `ray start` left on the machine (dead or alive); a join to an address where nothing answers
is a one-line error within ray.start_timeout_s, not Ray's minutes of retries; a join refused for Ray's token
authentication is a one-line error naming the token settings."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from maporl.config import Config, with_overrides
from maporl.errors import UsageError

pytestmark = pytest.mark.ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_tmpdir(monkeypatch):
    """Ray's temp dir (RAY_TMPDIR/ray, where `ray start` records its cluster in ray_current_cluster), away from the
    machine's /tmp/ray. Short: a local instance puts its sockets there, and a socket path has at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (path / "ray").mkdir()
    yield path / "ray"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ray(ray_tmpdir):
    """Ray, not initialized; shut down before its temp dir goes."""
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    yield ray
    ray.shutdown()


def dead_cluster_file(ray_dir: Path) -> str:
    """What a cluster killed without `ray stop` leaves: its address in ray_current_cluster, nothing listening."""
    address = f"127.0.0.1:{free_port()}"
    (ray_dir / "ray_current_cluster").write_text(address)
    return address


def no_gcs_processes() -> frozenset:
    """Ray's `ps` lookup of running GCS processes, finding none."""
    return frozenset()


no_gcs_processes.cache_clear = lambda: None  # ray calls it on the lru_cache it replaces


def cfg(*overrides: str) -> Config:
    return with_overrides(Config(), ["backend=ray", *overrides])


def test_an_empty_address_starts_a_private_instance_not_the_dead_cluster_ray_start_left(ray, ray_tmpdir):
    from maporl.distributed.actors import ray_session

    stale = dead_cluster_file(ray_tmpdir)
    ray_session(cfg())
    assert ray.get_runtime_context().gcs_address != stale
    assert (ray_tmpdir / "ray_current_cluster").read_text() == stale  # left as it was


@pytest.mark.parametrize("how", ["auto", "explicit", "RAY_ADDRESS"])
def test_a_join_where_nothing_answers_is_a_one_line_error_at_once(ray, ray_tmpdir, monkeypatch, how):
    """ray.address=auto reads the dead cluster's address from ray_current_cluster; an explicit address or
    RAY_ADDRESS names it. Ray would retry the GCS for minutes; the error comes before ray.init."""
    import ray._private.services as services

    from maporl.distributed.actors import ray_session

    # 'auto' prefers a live GCS process seen in `ps` over the recorded address (services.py,
    # get_ray_address_from_environment): none here, whatever else runs on the machine (other tests' instances).
    monkeypatch.setattr(services, "find_gcs_addresses", no_gcs_processes)
    stale = dead_cluster_file(ray_tmpdir)
    overrides = {"auto": ["ray.address=auto"], "explicit": [f"ray.address={stale}"], "RAY_ADDRESS": []}[how]
    if how == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", stale)
    start = time.monotonic()
    with pytest.raises(UsageError) as e:
        ray_session(cfg(*overrides, "ray.start_timeout_s=5"))
    assert time.monotonic() - start < 5
    message = str(e.value)
    assert "\n" not in message and f":{stale.rsplit(':', 1)[1]} " in message  # Ray's resolution of 127.0.0.1
    assert all(fix in message for fix in ("ray start --head", "ray stop", "leave ray.address empty"))
    assert not ray.is_initialized()


def test_auto_with_no_cluster_on_the_machine_is_a_one_line_error(ray, ray_tmpdir, monkeypatch):
    import ray._private.services as services

    from maporl.distributed.actors import ray_session

    # Ray's 'auto' also takes any GCS process it sees in `ps`: none here, whatever else runs on the machine.
    monkeypatch.setattr(services, "find_gcs_addresses", no_gcs_processes)
    with pytest.raises(UsageError, match="no Ray cluster is running on this machine") as e:
        ray_session(cfg("ray.address=auto"))
    assert "\n" not in str(e.value) and "ray start --head" in str(e.value)


# What ray.init raises for a driver the head's GCS refuses (Ray 2.60, token authentication): after its retries, a
# ConnectionError from a RuntimeError holding the AuthenticationError's traceback as text; or, with RAY_AUTH_MODE=token
# and no token at all, the AuthenticationError at once.
REFUSED = (
    "Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n  ...\n"
    "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing or incorrect."
)


@pytest.mark.parametrize("refusal", ["wrong or missing token", "no token with RAY_AUTH_MODE=token"])
def test_a_join_refused_for_the_auth_token_names_the_token_settings(ray, ray_tmpdir, monkeypatch, refusal):
    from ray.exceptions import AuthenticationError

    from maporl.distributed.actors import ray_session

    def init(address=None, **kwargs):
        if refusal == "wrong or missing token":
            raise ConnectionError(f"Failed to connect to Ray cluster at {address}") from RuntimeError(REFUSED)
        raise AuthenticationError("Token authentication is enabled but no authentication token was found")

    # Something answers, on every interface (Ray connects to this machine's IP for 127.0.0.1): the join gets as far
    # as ray.init.
    with socket.create_server(("", 0)) as gcs:
        address = f"127.0.0.1:{gcs.getsockname()[1]}"
        monkeypatch.setattr(ray, "init", init)
        with pytest.raises(UsageError) as e:
            ray_session(cfg(f"ray.address={address}"))
    message = str(e.value)
    assert "\n" not in message and address in message
    assert all(fix in message for fix in ("RAY_AUTH_MODE=token", "~/.ray/auth_token", "RAY_AUTH_TOKEN="))


DRIVER = """
import sys
from maporl.config import Config, with_overrides
from maporl.errors import UsageError
from maporl.distributed.actors import ray_session
try:
    ray = ray_session(with_overrides(Config(), ["backend=ray", "ray.address=" + sys.argv[1]]))
except UsageError as e:
    print("UsageError:", e)
    sys.exit(2)
print("joined", ray.get_runtime_context().gcs_address, "nodes", len(ray.nodes()))
ray.shutdown()
"""


@pytest.fixture
def token_head(tmp_path):
    """A `ray start --head` cluster with token authentication, in its own temp dir and home, as docs/scaling.md
    starts it; the address and token. `--block` keeps it in one process tree, all ended at teardown."""
    pytest.importorskip("ray")
    import psutil

    tmpdir = tempfile.mkdtemp(prefix="r", dir="/tmp")
    token, port = secrets.token_hex(32), free_port()
    env = clean_env(tmp_path / "head", RAY_TMPDIR=tmpdir, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address_file = Path(tmpdir) / "ray" / "ray_current_cluster"
    try:
        deadline = time.monotonic() + 60
        while not address_file.is_file() and head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert address_file.is_file(), "ray start --head did not come up"
        yield {"address": address_file.read_text().strip(), "token": token, "tmpdir": tmpdir}
    finally:
        tree = psutil.Process(head.pid).children(recursive=True) if head.poll() is None else []
        head.terminate()
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        for p in tree:
            if p.is_running():
                p.kill()
        shutil.rmtree(tmpdir, ignore_errors=True)


def clean_env(home: Path, **extra: str) -> dict:
    """This environment without Ray's address and token settings, HOME where no ~/.ray/auth_token is, plus `extra`."""
    home.mkdir(parents=True, exist_ok=True)
    ray_vars = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR")
    return {k: v for k, v in os.environ.items() if k not in ray_vars} | {"HOME": str(home)} | extra


def driver(address: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, address], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_a_token_auth_cluster_takes_a_driver_with_its_token_and_a_private_instance_ignores_it(token_head, tmp_path):
    """The head as `ray start --head` with RAY_AUTH_MODE=token makes it: a driver without the token is a one-line
    error naming the fix; one with RAY_AUTH_MODE=token and the head's token joins; an empty address starts its own
    instance though ray_current_cluster names this live cluster."""
    address, token = token_head["address"], token_head["token"]
    # Ray retries a refused join 20 times a second apart: 2 here, to keep the test short.
    refused = driver(address, clean_env(tmp_path / "driver", RAY_NUM_REDIS_GET_RETRIES="2"))
    assert refused.returncode == 2, refused.stdout + refused.stderr[-3000:]
    line = refused.stdout.strip()
    assert line.startswith("UsageError:") and "\n" not in line and address in line and "RAY_AUTH_TOKEN=" in line

    joined = driver(address, clean_env(tmp_path / "driver", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token))
    assert joined.returncode == 0, joined.stdout + joined.stderr[-3000:]
    assert f"joined {address} nodes 1" in joined.stdout

    private = driver("", clean_env(tmp_path / "driver", RAY_TMPDIR=token_head["tmpdir"]))
    assert private.returncode == 0, private.stdout + private.stderr[-3000:]
    assert "joined" in private.stdout and address not in private.stdout
