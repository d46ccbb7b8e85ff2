"""Camera credentials kept out of the command line and the config file, so that `ps` and
/proc/PID/cmdline never show them:

- `${NAME}` placeholders in a source URL, filled from the environment when the source opens
  (`rtsp://viewer:${GATE_PASSWORD}@10.0.0.21/stream`, `https://cam/mjpeg?token=${CAM_TOKEN}`);
- a camera's `password_env` (an environment variable) or `password_file` (a file, read at
  every open, so a rotated secret is picked up on the next reconnect), with `username`,
  put into the URL's user-info.

Values are inserted percent-encoded (they are the secret itself, not URL text), so a
password may hold `@`, `:` or `/`. The URL that is opened never leaves the reader thread:
everything shown is the template, through monitor.redaction.redact.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class CredentialError(ValueError):
    """A credential that cannot be had; the message names the variable or file, never a value."""


def placeholders(url: str) -> list[str]:
    return PLACEHOLDER.findall(url)


def expand(url: str, environ=None) -> str:
    """Fill every ${NAME} of `url` from the environment (percent-encoded)."""
    environ = os.environ if environ is None else environ

    def value(m: re.Match) -> str:
        name = m.group(1)
        if name not in environ:
            raise CredentialError(f"environment variable {name} (named by ${{{name}}} in the URL) is not set")
        return quote(environ[name], safe="")
    return PLACEHOLDER.sub(value, url)


@dataclass(frozen=True)
class Credentials:
    """Where a camera's password comes from (one of env and file), and its user name."""
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None

    def __bool__(self) -> bool:
        return bool(self.username or self.password_env or self.password_file)

    def password(self, environ=None) -> str | None:
        environ = os.environ if environ is None else environ
        if self.password_env:
            if self.password_env not in environ:
                raise CredentialError(f"password_env: environment variable {self.password_env} is not set")
            return environ[self.password_env]
        if self.password_file:
            try:
                text = Path(self.password_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                why = getattr(exc, "strerror", None) or exc.__class__.__name__
                raise CredentialError(f"password_file {self.password_file}: cannot read it ({why})") from None
            password = text.rstrip("\r\n")
            if not password:
                raise CredentialError(f"password_file {self.password_file}: is empty")
            return password
        return None


def resolve(url: str, credentials: Credentials | None = None, environ=None) -> str:
    """The URL to open: placeholders filled, and the user name and password (if configured)
    in its user-info. Raises CredentialError naming what is missing."""
    opened = expand(url, environ)
    if not credentials:
        return opened
    parts = urlsplit(opened)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = credentials.username
    if user is None and "@" in parts.netloc:
        user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]  # the URL's own (already encoded) user
    else:
        user = quote(user or "", safe="")
    password = credentials.password(environ)
    userinfo = user + (":" + quote(password, safe="") if password is not None else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}" if userinfo else host))


def check(url: str, credentials: Credentials | None = None, environ=None) -> None:
    """Raise CredentialError now if the source could not get its credentials when it opens."""
    resolve(url, credentials, environ)
