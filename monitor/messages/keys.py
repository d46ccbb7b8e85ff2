"""CURVE keys for the message path: making them, reading them, and putting them on sockets.

ZeroMQ's CURVE mechanism encrypts every message and authenticates both ends. The side that
binds (the monitor's publisher, both sides of a broker) is the CURVE server: it holds a key
pair and a list of client public keys it lets in, checked by pyzmq's ZAP authenticator
(`Gatekeeper`). The side that connects (subscribe, dashboard, a monitor publishing into a
broker) is a CURVE client: its own key pair plus the server's public key.

Keys live in files made by `run_monitor.py keys` (zmq.auth certificates: NAME.key holds the
public key, NAME.key_secret the pair, mode 0600), or a secret key comes from an environment
variable (`env:NAME`, holding the 40-character Z85 secret key). Never on the command line:
any user can read a process's arguments. Secret keys are never printed: a KeyPair's repr
and every message here name the key's origin (file or variable), not the key.

Ground package: pyzmq and the standard library only.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "env:"
Z85_KEY = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
PUBLIC_SUFFIX, SECRET_SUFFIX = ".key", ".key_secret"
MAX_LOGGED_REFUSALS = 100       # distinct refused keys logged; a hostile client cycling keys cannot flood the log

log = logging.getLogger("monitor.messages.keys")


class CurveError(ValueError):
    """A key setting that cannot be used; the message names the flag or key, the file and why."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes                       # Z85, 40 bytes
    secret: bytes = field(repr=False)   # Z85, 40 bytes; never logged
    origin: str = ""                    # the file or env:VAR it came from


@dataclass(frozen=True)
class CurveServer:
    """The binding side: its key pair and the client public keys it lets in."""
    pair: KeyPair
    allowed: frozenset[bytes]
    allowed_origin: str = ""

    def describe(self) -> str:
        return (f"CURVE on: key pair {self.pair.origin} (public key {self.pair.public.decode()}), "
                f"{len(self.allowed)} authorized client key(s) from {self.allowed_origin}")


@dataclass(frozen=True)
class CurveClient:
    """The connecting side: its key pair and the public key of the server it connects to."""
    pair: KeyPair
    server_public: bytes
    server_origin: str = ""

    def secure(self, socket) -> None:
        """Before connect: this socket speaks CURVE as a client of that server."""
        socket.curve_secretkey = self.pair.secret
        socket.curve_publickey = self.pair.public
        socket.curve_serverkey = self.server_public

    def describe(self) -> str:
        return (f"CURVE on: key pair {self.pair.origin} (public key {self.pair.public.decode()}), "
                f"server key {self.server_origin}")


# ----------------------------------------------------------------------------- making keys

def generate(folder: str | Path, names: list[str]) -> list[tuple[Path, Path]]:
    """A key pair per name in `folder` (made 0700 if new): NAME.key (public, 0644) and
    NAME.key_secret (0600, written under a 0077 umask so it is never readable by others).
    Refuses to overwrite a key: a lost secret key locks out whoever holds the old public one."""
    import zmq.auth

    folder = Path(folder)
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise CurveError(f"--name {name!r}: a key name is letters, digits, '_', '-' and '.' (it becomes a file name)")
        for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX):
            if (folder / f"{name}{suffix}").exists():
                raise CurveError(f"{folder / (name + suffix)}: already exists; keys are never overwritten "
                                 f"(remove it first, or choose another --name)")
    if folder.exists() and not folder.is_dir():
        raise CurveError(f"--out {folder}: not a directory")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    made = []
    old = os.umask(0o077)
    try:
        for name in names:
            public, secret = zmq.auth.create_certificates(folder, name)
            os.chmod(secret, 0o600)
            os.chmod(public, 0o644)
            made.append((Path(public), Path(secret)))
    finally:
        os.umask(old)
    return made


# ----------------------------------------------------------------------------- reading keys

def _looks_like_a_key(spec: str) -> bool:
    return bool(Z85_KEY.match(spec)) and not Path(spec).exists()


def _z85(value: bytes, what: str) -> bytes:
    from zmq.utils import z85

    value = value.strip()
    try:
        if len(value) == 40 and len(z85.decode(value)) == 32:
            return value
    except (ValueError, KeyError, IndexError):
        pass
    raise CurveError(f"{what}: not a CURVE key (40 Z85 characters)")


def _from_env(spec: str, where: str) -> bytes:
    name = spec[len(ENV_PREFIX):]
    if not name:
        raise CurveError(f"{where} {spec!r}: name the environment variable, e.g. env:SSRL_CURVE_KEY")
    value = os.environ.get(name)
    if not value:
        raise CurveError(f"{where} {spec!r}: environment variable {name} is not set")
    return _z85(value.encode(), f"{where} {spec!r}: environment variable {name}")


def _certificate(path: Path, where: str) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if path.is_dir():
        raise CurveError(f"{where} {str(path)!r}: a directory, not a key file")
    if not path.is_file():
        raise CurveError(f"{where} {str(path)!r}: no such key file (make keys with: run_monitor.py keys --out DIR)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CurveError(f"{where} {str(path)!r}: not a key file ({exc})") from None
    public = _z85(public, f"{where} {str(path)!r}: public-key")
    if secret is not None:
        secret = _z85(secret, f"{where} {str(path)!r}: secret-key")
    return public, secret


def load_pair(spec: str, where: str) -> KeyPair:
    """This side's key pair from a secret certificate file, or `env:VAR` holding the Z85
    secret key (the public key is derived from it)."""
    import zmq

    if spec.startswith(ENV_PREFIX):
        secret = _from_env(spec, where)
        return KeyPair(zmq.curve_public(secret), secret, spec)
    if _looks_like_a_key(spec):
        raise CurveError(f"{where}: that looks like a key itself; give a key file or env:VAR instead "
                         f"(the command line and config values are readable by others)")
    path = Path(spec)
    public, secret = _certificate(path, where)
    if secret is None:
        raise CurveError(f"{where} {spec!r}: holds only a public key; give the {SECRET_SUFFIX} file of the pair")
    if zmq.curve_public(secret) != public:
        raise CurveError(f"{where} {spec!r}: its public and secret keys are not a pair")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s %s: the secret key file is readable by other users (mode %04o); chmod 600 it", where, spec, mode)
    return KeyPair(public, secret, spec)


def load_public(spec: str, where: str) -> bytes:
    """A public key from a key file (NAME.key, or the pair's file), or `env:VAR` holding it."""
    if spec.startswith(ENV_PREFIX):
        return _from_env(spec, where)
    if _looks_like_a_key(spec):
        raise CurveError(f"{where}: that looks like a key itself; give the server's public key file or env:VAR")
    return _certificate(Path(spec), where)[0]


def load_authorized(folder: str, where: str) -> frozenset[bytes]:
    """The public keys of every NAME.key file in `folder`: the clients let in."""
    path = Path(folder)
    if not path.is_dir():
        raise CurveError(f"{where} {folder!r}: no such directory (it holds the allowed clients' public key files, NAME.key)")
    keys = set()
    for file in sorted(path.glob(f"*{PUBLIC_SUFFIX}")):
        keys.add(_certificate(file, where)[0])
    if not keys:
        raise CurveError(f"{where} {folder!r}: no public key files (*{PUBLIC_SUFFIX}) in it, so no client could connect")
    return frozenset(keys)


# ----------------------------------------------------------------------------- the gatekeeper

class Gatekeeper:
    """pyzmq's ZAP authenticator on a context: a CURVE server socket of this context admits
    only the client keys listed for its domain. One per context; start it before any bind,
    since libzmq lets every client in while no ZAP handler runs."""

    def __init__(self, context):
        from zmq.auth.thread import ThreadAuthenticator

        self._allowed: dict[str, frozenset[bytes]] = {}
        self._roles: dict[str, str] = {}
        self._refused: set[tuple[str, bytes]] = set()
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("monitor.messages.zap"))
        self._auth.start()

    def serve(self, socket, server: CurveServer, domain: str, role: str = "client") -> None:
        """Before bind: `socket` is a CURVE server admitting `server.allowed` (as `role`s)."""
        self._allowed[domain] = server.allowed
        self._roles[domain] = role
        self._auth.configure_curve_callback(domain, credentials_provider=self)
        socket.zap_domain = domain.encode()
        socket.curve_secretkey = server.pair.secret
        socket.curve_publickey = server.pair.public
        socket.curve_server = True

    def callback(self, domain: str, key: bytes) -> bool:
        """The authenticator's question, on its thread: may this client key in?"""
        if key in self._allowed.get(domain, frozenset()):
            return True
        if (domain, key) not in self._refused and len(self._refused) < MAX_LOGGED_REFUSALS:
            self._refused.add((domain, key))
            log.warning("refused a %s with an unknown CURVE key %s (%s): it receives and sends nothing; "
                        "add its .key file to the authorized keys to let it in",
                        self._roles.get(domain, "client"), key.decode(errors="replace"), domain)
        return False

    def stop(self) -> None:
        self._auth.stop()


# ----------------------------------------------------------------------------- client flags

def add_client_flags(parser, server: str = "the monitor's (or broker's)") -> None:
    """--curve-key and --curve-server-key, as subscribe and the dashboard take them."""
    parser.add_argument("--curve-key", metavar="FILE",
                        help="CURVE: this client's key pair (NAME.key_secret from 'run_monitor.py keys', or env:VAR "
                             "holding the Z85 secret key)")
    parser.add_argument("--curve-server-key", metavar="FILE",
                        help=f"CURVE: {server} public key file (NAME.key), or env:VAR")


def client_from_flags(args) -> CurveClient | None:
    """The CurveClient those flags describe, or None without them; CurveError names the flag."""
    if not (args.curve_key or args.curve_server_key):
        return None
    if not (args.curve_key and args.curve_server_key):
        given, missing = (("--curve-key", "--curve-server-key (the server's public key file)") if args.curve_key
                          else ("--curve-server-key", "--curve-key (this client's key pair)"))
        raise CurveError(f"{given} needs {missing}")
    pair = load_pair(args.curve_key, "--curve-key")
    return CurveClient(pair, load_public(args.curve_server_key, "--curve-server-key"), args.curve_server_key)
