"""Credentials out of every string the monitor shows: logs, status and camera messages, the
dashboard, errors. One function, `redact`, used everywhere.

A leaf module (the standard library only), so that every package may use it: video/ for
source names and reasons, dashboard/ for what it draws, commands/ for errors.

What goes:
- the user-info of a URL, `scheme://user:pass@host` -> `scheme://***@host`. The user-info
  ends at the LAST `@` before the host (a password may hold `@`: rtsp://u:p@ss@host/ );
- the value of any parameter whose name looks secret (pw, pwd, password, passwd, pass...,
  token, key, apikey, api_key, secret, auth..., sig, signature, credential, session, user),
  in a query string or anywhere else a `name=value` pair starts (`/snaps/pw=x.jpg`): `?token=abc` -> `?token=***`.
"""
from __future__ import annotations

import re

MASK = "***"

# scheme:// then everything up to the last @ before a query, a fragment or a space: a
# password may hold @ or even an unencoded /; hiding a path that holds @ too is the safe side.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s?#'\"]*@")
# Secret-looking names: pw exactly, or any name containing one of these words.
_SECRET_WORDS = r"pass|pwd|token|secret|key|auth|sig|credential|session|user"
_SECRET_PARAM = re.compile(rf"(?i)(^|[^a-z0-9_.-])((?:pw|[a-z0-9_.-]*(?:{_SECRET_WORDS})[a-z0-9_.-]*)=)([^&;#\s'\"]*)")


def redact(text) -> str:
    """`rtsp://admin:p@ss@cam/live?token=x&ch=1` -> `rtsp://***@cam/live?token=***&ch=1`.
    Anything else in the text is left as it is; None becomes ''."""
    if text is None:
        return ""
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", str(text))
    return _SECRET_PARAM.sub(_mask_value, text)


def _mask_value(m: re.Match) -> str:
    value = m.group(3)
    if not value or value.startswith(MASK):
        return m.group(0)  # empty, or masked already: redacting twice changes nothing
    return m.group(1) + m.group(2) + MASK
