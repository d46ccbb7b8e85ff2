"""Reading a PyTorch weight file as untrusted input: `weights_only=True`, a plain dict of
tensors (or one wrapped under "state_dict"), the `module.` prefix of DataParallel stripped."""
from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import torch

# What torch.save writes: a zip archive (PyTorch >= 1.6) or, from older versions, a bare pickle
# (protocol 2+ starts with the PROTO opcode 0x80).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


def read_tensor_dict(path: str | Path, error: type[Exception], kind: str) -> dict[str, torch.Tensor]:
    """`error` is raised, naming the file, for anything that is not such a dict; `kind` says
    what the file was meant to be ("checkpoint", "I3D weight file")."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {kind}")
    try:
        with warnings.catch_warnings():  # torch's own warnings about a bad file: the error below says it
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise error(f"{path}: not a readable PyTorch weight file ({_why_unreadable(path, exc)})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f"{path}: expected a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _why_unreadable(path: Path, exc: Exception) -> str:
    """torch.load's error in words: its safe unpickler reports a refused pickle opcode as a bare
    number ("Unsupported operand 101"), which says nothing to a user."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO)):
        return (f"neither the zip archive torch.save writes nor a legacy pickle: it starts with {head!r}; "
                f"is it the right file, or a partial download?")
    text = str(exc)
    opcode = re.search(r"Unsupported operand (\d+)", text)
    if opcode:
        code = int(opcode.group(1))
        return (f"safe loading (weights_only), which never runs code from a file, refuses its pickle opcode {code} "
                f"({chr(code)!r}): it holds more than tensors, or is a plain pickle rather than what torch.save writes")
    named = re.search(r"GLOBAL (\S+)", text)
    if named:
        return (f"it holds more than tensors: it names the Python object {named.group(1)}, which safe loading "
                f"(weights_only) refuses to build")
    if head.startswith(_ZIP_MAGIC) and not _whole_zip(path):
        return "its zip archive is incomplete: truncated or damaged"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"damaged: {first[:160]}"


def _whole_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def state_dict_mismatches(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                          may_lack: tuple[str, ...] = ()) -> list[str]:
    """What stops `state` from loading strictly into a network whose own state dict is
    `expected`: mis-shaped tensors by name with both shapes, then missing and unexpected names
    (missing ones starting with a `may_lack` prefix are allowed). Empty when it fits."""
    def names(keys):
        return f"{', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
    problems = [f"tensor '{k}': expected shape {list(v.shape)}, found {list(state[k].shape)}"
                for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in expected if k not in state and not (may_lack and k.startswith(may_lack))]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"missing tensors: {names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {names(unexpected)}")
    return problems
