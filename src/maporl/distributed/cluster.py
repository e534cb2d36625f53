"""How a backend=ray driver gets its Ray cluster (`ray_session` calls `start_or_join`).

An empty `ray.address` with RAY_ADDRESS unset starts a private local instance (`ray.init(address="local")`): a bare
`ray.init()` would join whatever cluster `ray start` last recorded in Ray's temp dir (`ray_current_cluster`), and
when that cluster died without `ray stop` it retries the dead address for minutes.

A join (`ray.address` = HOST:PORT or 'auto', or RAY_ADDRESS) first resolves the address as `ray.init` will and opens
a TCP connection to it, bounded by `ray.start_timeout_s`: nothing listening is a one-line error at once instead of
those retries. A join the cluster refuses for Ray's token authentication (Ray 2.60: the head checks a token when
started with RAY_AUTH_MODE=token, or by `ray start --head` wherever a token already exists, e.g. ~/.ray/auth_token
made by an earlier local `ray.init()`) is a one-line error naming the token settings, once Ray's own retries (about
20 s) are done.
"""

from __future__ import annotations

import os
import socket

from maporl.errors import UsageError

INIT_OPTIONS = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}

FIXES = (
    "start the cluster there (`ray start --head` on the head node), run `ray stop` on this machine to clear a "
    "cluster that died without it, or leave ray.address empty (and RAY_ADDRESS unset) for a private local instance"
)

TOKEN_FIX = (
    "on every node and on the driver set RAY_AUTH_MODE=token and either copy the head's ~/.ray/auth_token there or "
    "export RAY_AUTH_TOKEN=<the head's token> (`ray get-auth-token` on the head prints it)"
)


def start_or_join(address: str, timeout_s: float) -> None:
    """`ray.init` for a run: a private local instance for an empty `address` with RAY_ADDRESS unset, else the cluster
    that `address` ('auto' or HOST:PORT; it wins over RAY_ADDRESS, as in `ray.init`, except 'auto') or RAY_ADDRESS
    names, checked within `timeout_s`. Ray must not be initialized yet."""
    import ray

    env = os.environ.get("RAY_ADDRESS", "")
    if address and address != "auto":
        target, source = address, f"ray.address={address}"
    elif env:
        target, source = env, f"RAY_ADDRESS={env}"
    elif address:
        target, source = address, "ray.address=auto"
    else:  # an explicit "local": a bare ray.init() would join what `ray start` left here, alive or dead
        ray.init(address="local", **INIT_OPTIONS)
        return
    try:
        gcs = resolve(target, source)
        if gcs is not None:  # None: ray.address=local, nothing to join
            check_listening(gcs, source, timeout_s)
    except ImportError:  # a Ray that moved the helpers used here (written against 2.60): join as ray.init would
        gcs = target
    try:
        ray.init(address=target, **INIT_OPTIONS)
    except Exception as e:
        if refused_for_token(e):
            raise UsageError(
                f"{source}: the Ray cluster at {gcs} refused this driver's auth token; {TOKEN_FIX}"
            ) from e
        if isinstance(e, ConnectionError):
            raise UsageError(f"{source}: could not join the Ray cluster at {gcs} ({last_line(e)}); {FIXES}") from e
        raise


def resolve(address: str, source: str) -> str | None:
    """HOST:PORT of the cluster's GCS (or of the Ray client server for ray://), as `ray.init` will resolve it: 'auto'
    is the address `ray start` recorded in <Ray's temp dir>/ray_current_cluster, or else a GCS process seen in `ps`."""
    from ray._private.services import canonicalize_bootstrap_address

    if "://" in address:
        return address.split("://", 1)[1].split("/", 1)[0]
    try:
        return canonicalize_bootstrap_address(address)
    except ConnectionError:  # 'auto' found nothing
        raise UsageError(
            f"{source}: no Ray cluster is running on this machine; start one with `ray start --head`, give "
            "ray.address=HEAD_IP:PORT, or leave ray.address empty for a private local instance"
        ) from None
    except ValueError:
        raise UsageError(
            f"{source}: not a Ray address; use HOST:PORT (the head's GCS port, 6379 by default), auto, or empty for "
            "a private local instance"
        ) from None


def check_listening(gcs: str, source: str, timeout_s: float) -> None:
    """A TCP connection to the GCS within `timeout_s`: `ray.init` would retry a dead one for minutes."""
    from ray._common.network_utils import parse_address
    from ray._common.utils import get_ray_address_file

    host, port = parse_address(gcs) or (gcs, "")
    recorded = f" (recorded by `ray start` in {get_ray_address_file(None)})" if source == "ray.address=auto" else ""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except ValueError:
        raise UsageError(f"{source}: not a Ray address; use HOST:PORT, auto, or empty") from None
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else e.strerror or str(e)
        raise UsageError(
            f"{source}: nothing answers at {gcs}{recorded} within ray.start_timeout_s={timeout_s:g}s ({reason}); "
            + FIXES
        ) from None


def refused_for_token(error: BaseException) -> bool:
    """Whether a failed `ray.init` was refused by the cluster's token authentication. Ray 2.60 raises the
    AuthenticationError itself only when RAY_AUTH_MODE=token finds no token at all; a token the head rejects (or none
    sent) surfaces after its retries as a ConnectionError from a RuntimeError that carries the AuthenticationError's
    traceback as text."""
    from ray.exceptions import AuthenticationError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, AuthenticationError) or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def last_line(error: BaseException) -> str:
    """The last line of what Ray says went wrong: its ConnectionError wraps a RuntimeError ending in the last
    connection error's traceback, whose last line names it."""
    text = str(error.__cause__ or error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]
