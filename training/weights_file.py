"""Reading a PyTorch weight file as untrusted input: `weights_only=True`, a plain dict of
tensors (or one wrapped under "state_dict"), the `module.` prefix of DataParallel stripped."""
from __future__ import annotations

from pathlib import Path

import torch


def read_tensor_dict(path: str | Path, error: type[Exception], kind: str) -> dict[str, torch.Tensor]:
    """`error` is raised, naming the file, for anything that is not such a dict; `kind` says
    what the file was meant to be ("checkpoint", "I3D weight file")."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {kind}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise error(f"{path}: not a readable PyTorch weight file ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f"{path}: expected a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


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
