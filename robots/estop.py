"""The e-stop fast path: latch an arm's e-stop with as little as possible between the
operator's command and the bridge.

Imports only pyzmq, msgpack and robots.keys (no numpy, no pydantic, no SQLAlchemy), so
`evalfleet fleet stop` reaches the bridges ~0.1 s after the shell starts it. The message is
the ordinary protocol `estop` request (docs/protocol.md): one msgpack header part.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgpack
import zmq

#: The e-stop speaks protocol v1 first: `estop` is the same in every version, and v1 reaches
#: every bridge that serves v1, old or new (docs/protocol.md section 3). A bridge that speaks
#: only later versions answers UNSUPPORTED_VERSION with its `versions`: the e-stop is then sent
#: once more, in the highest of them this tool speaks, within the same deadline.
#: A test keeps it in SUPPORTED_VERSIONS.
PROTOCOL_VERSION = 1
#: The versions whose `estop` request this tool can send (`reason`: str in each of them).
ESTOP_VERSIONS: tuple[int, ...] = (1, 2)
_UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"


@dataclass(frozen=True)
class StopTarget:
    name: str
    endpoint: str
    client_secret: Path | None = None  # CURVE: this client's NAME.key_secret
    server_public: Path | None = None  # CURVE: the bridge's NAME.key


def retry_version(header: object, sent: int, speaks: tuple[int, ...] = ESTOP_VERSIONS) -> int | None:
    """The version to send a refused request in once more: when `header` is an
    UNSUPPORTED_VERSION error reply, the highest of its `versions` this tool `speaks` (not
    `sent`); else None (docs/protocol.md section 3)."""
    if not isinstance(header, dict) or header.get("ok") or header.get("code") != _UNSUPPORTED_VERSION:
        return None
    offered = header.get("versions")
    if not isinstance(offered, list):
        return None
    common = [v for v in offered if type(v) is int and v != sent and v in speaks]
    return max(common) if common else None


def estop_one(target: StopTarget, reason: str, timeout_ms: int = 500,
              context: zmq.Context | None = None) -> str:
    """Send `estop` to one bridge and wait for its answer. Returns 'e-stopped' or
    'FAILED: ...'; never raises. Sent in v1; a bridge that does not serve v1 gets it once more
    in the highest version its UNSUPPORTED_VERSION reply offers, within the same `timeout_ms`."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.linger = 0
        if target.client_secret and target.server_public:
            from robots.keys import load_public, load_secret

            pub, sec = load_secret(target.client_secret, "client secret key file")
            sock.curve_publickey, sock.curve_secretkey = pub, sec
            sock.curve_serverkey = load_public(target.server_public, "bridge public key file")
        sock.connect(target.endpoint)
        deadline = time.monotonic() + timeout_ms / 1000
        version: int | None = PROTOCOL_VERSION
        tried: list[int] = []
        header: object = None
        while version is not None and version not in tried:
            tried.append(version)
            rid = uuid.uuid4().int >> 66  # a request id: non-negative, < 2**63
            sock.send(msgpack.packb({"v": version, "type": "estop", "id": rid,
                                     "reason": reason}, use_bin_type=True))
            header = _wait_reply(sock, rid, deadline)
            if header is None:
                return f"FAILED: no answer from {target.endpoint} within {timeout_ms} ms"
            version = retry_version(header, version)
        assert isinstance(header, dict)
        st = header.get("st")
        if header.get("ok") and isinstance(st, dict) and st.get("estopped") is True:
            return "e-stopped"  # the reply's safety summary shows the latch engaged
        if header.get("ok"):
            return f"FAILED: bridge acknowledged the estop but its reply does not show the latch: st={st!r}"
        if header.get("code") == _UNSUPPORTED_VERSION:
            return (f"FAILED: bridge answered UNSUPPORTED_VERSION to estop in v{'/v'.join(map(str, tried))}: "
                    f"it speaks {header.get('versions')}, this tool {list(ESTOP_VERSIONS)}: "
                    f"{header.get('message')}")
        return f"FAILED: bridge answered {header.get('code')}: {header.get('message')}"
    except Exception as e:  # noqa: BLE001 - reported per arm; an e-stop path must not raise
        return f"FAILED: {e.__class__.__name__}: {e}"
    finally:
        sock.close(0)


def _wait_reply(sock: zmq.Socket, rid: int, deadline: float) -> dict | None:
    """The reply header to request `rid` (a map), or None when `deadline` passes first.
    Replies to other ids (none on this fresh socket, in practice) are skipped."""
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0 or not sock.poll(left_ms):
            return None
        parts = sock.recv_multipart()
        header = msgpack.unpackb(parts[-1] if parts[0] == b"" else parts[0], raw=False)
        if not isinstance(header, dict):
            raise TypeError(f"reply is not a map: {header!r}"[:200])
        if header.get("id") in (rid, None):  # nil: an error reply to an unreadable request
            return header


def estop_all(targets: list[StopTarget], reason: str, timeout_ms: int = 500) -> dict[str, str]:
    """E-stop every target in parallel; {arm name: 'e-stopped' | 'FAILED: ...'}."""
    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as ex:
        results = ex.map(lambda t: (t.name, estop_one(t, reason, timeout_ms)), targets)
        return dict(results)


def targets_from_fleet_yaml(path: Path, arm: str | None) -> list[StopTarget]:
    """Arms of a fleet.yaml (plain YAML read; the full schema check is not on this path)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    out = []
    for a in data.get("arms") or []:
        if arm is not None and a.get("name") != arm:
            continue
        curve = a.get("curve") or {}
        out.append(StopTarget(
            name=str(a["name"]), endpoint=str(a["endpoint"]),
            client_secret=Path(curve["client_secret"]) if curve.get("client_secret") else None,
            server_public=Path(curve["server_public"]) if curve.get("server_public") else None,
        ))
    return out
