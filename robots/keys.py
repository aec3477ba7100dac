"""CurveZMQ key files for the bridge (pyzmq's zmq.auth certificate format, Z85 text).

`generate_keypair(dir, name)` writes NAME.key (public, share it) and NAME.key_secret (keep it,
mode 0600). A bridge needs its own secret file and an allow-list directory holding the public
`.key` files of the orchestrators that may command it; an orchestrator needs its own secret
file and the bridge's public file. Loading never falls back to running open: every problem
raises KeyFileError saying which file and what to do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import zmq
import zmq.auth


class KeyFileError(RuntimeError):
    """A CURVE key file or allow-list directory is missing, unreadable or invalid."""


def generate_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create DIR/NAME.key and DIR/NAME.key_secret; returns (public, secret) paths.
    Refuses to overwrite an existing pair."""
    if not zmq.has("curve"):
        raise KeyFileError("this libzmq has no CURVE support: install a pyzmq wheel with libsodium/curve")
    d = Path(directory)
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"bad key name {name!r}: use a plain file name like 'orchestrator'")
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise KeyFileError(f"{public} or {secret} already exists: choose another name or delete them first")
    d.mkdir(parents=True, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(str(d), name)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


def _load(path: str | Path, what: str) -> tuple[bytes, bytes | None]:
    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"{what} {p} does not exist: create it with `evalfleet keys generate`")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise KeyFileError(f"{what} {p} is unreadable or not a CURVE certificate: {e}") from e
    if not public or len(public) != 40:
        raise KeyFileError(f"{what} {p} holds no valid public key")
    return public, secret


def load_secret(path: str | Path, what: str = "secret key file") -> tuple[bytes, bytes]:
    """-> (public, secret) Z85 keys from a NAME.key_secret file."""
    public, secret = _load(path, what)
    if not secret or len(secret) != 40:
        raise KeyFileError(f"{what} {path} holds no secret key: pass the NAME.key_secret file, not NAME.key")
    return public, secret


def load_public(path: str | Path, what: str = "public key file") -> bytes:
    return _load(path, what)[0]


def load_allow_dir(directory: str | Path) -> frozenset[bytes]:
    """Public keys (Z85) of every NAME.key in the directory. Empty or missing -> KeyFileError
    (a bridge that nobody may command is a configuration mistake)."""
    d = Path(directory)
    if not d.is_dir():
        raise KeyFileError(f"allow-list directory {d} does not exist: create it and copy client .key files in")
    keys = []
    for f in sorted(d.glob("*.key")):
        keys.append(load_public(f, "allow-listed public key"))
    if not keys:
        raise KeyFileError(f"allow-list directory {d} has no *.key public key: copy the orchestrator's NAME.key in")
    return frozenset(keys)


ZAP_DOMAIN = "evalfleet"


class CurveServerAuth:
    """The server half of CURVE for a bridge: its key pair, the allow list, and a ZAP
    authenticator thread that admits only allow-listed client keys (fail closed).

    `secure(sock)` makes a socket a CURVE server in the ZAP domain; `allowed(frame)` checks a
    received frame's authenticated key (the ZAP User-Id, the client's Z85 public key)."""

    def __init__(self, server_secret_file: str | Path, allow_dir: str | Path):
        self.public, self.secret = load_secret(server_secret_file, "bridge secret key file")
        self.allow_dir = Path(allow_dir)
        self.allowed_keys = load_allow_dir(allow_dir)
        self._auth = None

    def start(self, ctx: zmq.Context) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("evalfleet.bridge.zap"))
        self._auth.start()
        self._auth.configure_curve(domain=ZAP_DOMAIN, location=str(self.allow_dir))
        if not self._auth.certs.get(ZAP_DOMAIN):  # pyzmq only logs load failures: check
            self.stop()
            raise KeyFileError(f"the ZAP authenticator loaded no keys from {self.allow_dir}")

    def secure(self, sock: zmq.Socket) -> None:
        sock.curve_publickey, sock.curve_secretkey = self.public, self.secret
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN.encode()

    def allowed(self, frame: zmq.Frame) -> bool:
        try:
            uid = frame.get("User-Id")
        except zmq.ZMQError:  # no ZAP metadata: not authenticated
            return False
        return (uid.encode() if isinstance(uid, str) else uid) in self.allowed_keys

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
