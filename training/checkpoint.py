"""Reading and writing SSRL checkpoints in the published format (a plain state dict).

A checkpoint is untrusted input: it is read with `weights_only=True`. The stage, the feature
size and the crop-independent shapes are inferred from the tensor names; a mismatch names
the tensor, the shape the model expects and the shape found.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from training.weights_file import read_tensor_dict, state_dict_mismatches
from training.ssrl import PUBLISHED_GRIDS, PUBLISHED_CROPS, SSRL, SSRLConfig


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the SSRL network."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    state = read_tensor_dict(path, CheckpointError, "checkpoint file")
    # One published revision names the stage-1 clip relation block `Aggregate_base`.
    return {("Aggregate_clip." + k[len("Aggregate_base."):]) if k.startswith("Aggregate_base.") else k: v
            for k, v in state.items()}


def infer_config(state: dict[str, torch.Tensor], grids=None, crops: int = PUBLISHED_CROPS,
                 source: str = "checkpoint") -> SSRLConfig:
    """Stage from the number of `Aggregate_patch.i` blocks, feature size from the classifier."""
    if "classfier.fc1.weight" not in state:
        raise CheckpointError(f"{source}: tensor 'classfier.fc1.weight' is missing: not an SSRL checkpoint")
    feature_size = int(state["classfier.fc1.weight"].shape[1])
    indices = {int(m.group(1)) for k in state if (m := re.match(r"Aggregate_patch\.(\d+)\.", k))}
    if indices != set(range(len(indices))):
        raise CheckpointError(f"{source}: Aggregate_patch indices {sorted(indices)} are not 0..n-1")
    stage = len(indices) + 1
    if stage > 4:
        raise CheckpointError(f"{source}: {len(indices)} patch grids found; SSRL has at most 3")
    grids = tuple(grids) if grids else PUBLISHED_GRIDS
    return SSRLConfig(stage=stage, grids=grids, crops=crops, feature_size=feature_size)


def load_into(model: SSRL, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict load that explains itself: missing, unexpected and mis-shaped tensors by name."""
    problems = state_dict_mismatches(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{source} does not fit SSRL stage {model.config.stage} "
                              f"(grids {list(model.config.active_grids)}): " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, stage: int | None = None, grids=None,
               crops: int = PUBLISHED_CROPS) -> SSRL:
    """Build the network a checkpoint describes and load it, in eval mode."""
    state = read_state_dict(path)
    config = infer_config(state, grids=grids, crops=crops, source=str(path))
    if stage is not None and stage != config.stage:
        raise CheckpointError(f"{path}: --stage {stage} asked for, but the tensors are those of stage {config.stage}")
    model = SSRL(config)
    load_into(model, state, source=str(path))
    return model.eval()


def save_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """Write the published format: a plain state dict, no `module.` prefix."""
    inner = getattr(model, "module", model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in inner.state_dict().items()}, path)
