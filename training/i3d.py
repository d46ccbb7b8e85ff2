"""The I3D-ResNet50 trunk (SPEC.md §2) that turns a clip [N, 3, 16, H, W] into one pooled
feature vector per clip, with the tensor names of the published weight file
`i3d_r50_kinetics.pth`, and a strict loader for that file.

`width` scales every layer (64 is the published network, F = 32 * width = 2048); smaller
widths keep the same structure and tensor names and exist so that tests and demo bundles can
run a real I3D quickly on a CPU.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.weights_file import read_tensor_dict, state_dict_mismatches

PUBLISHED_WIDTH = 64
PUBLISHED_CLASSES = 400  # Kinetics-400; the classifier `fc` is in the file but unused here
EXPANSION = 4
# Blocks per layer and the temporal-kernel flag tc of each block (kernel 1 + 2·tc in conv1).
LAYERS = (("layer1", 1, (1, 1, 1)),
          ("layer2", 2, (1, 0, 1, 0)),
          ("layer3", 4, (1, 0, 1, 0, 1, 0)),
          ("layer4", 8, (0, 1, 0)))


class I3DError(ValueError):
    """A weight file that cannot be read or does not fit the I3D-ResNet50 trunk."""


class Bottleneck(nn.Module):
    """1+2tc x1x1 conv -> 1x3x3 conv (spatial stride) -> 1x1x1 conv to 4x planes, each with BN,
    plus the residual (through a 1x1x1 conv + BN where the shape changes)."""

    def __init__(self, inplanes: int, planes: int, stride: int, temporal: int):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, (1 + 2 * temporal, 1, 1), padding=(temporal, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * EXPANSION:
            self.downsample = nn.Sequential(
                nn.Conv3d(inplanes, planes * EXPANSION, 1, stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(planes * EXPANSION))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class I3DResNet50(nn.Module):
    """clips [N, 3, T, H, W] (RGB in [-1, 1]) -> features [N, 32 * width]."""

    def __init__(self, width: int = PUBLISHED_WIDTH, num_classes: int = PUBLISHED_CLASSES):
        super().__init__()
        self.width = width
        self.feature_size = width * 8 * EXPANSION
        self.conv1 = nn.Conv3d(3, width, (5, 7, 7), stride=(2, 2, 2), padding=(2, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool1 = nn.MaxPool3d((2, 3, 3), stride=(2, 2, 2))
        self.maxpool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))
        inplanes = width
        for name, multiple, temporal in LAYERS:
            planes = width * multiple
            stride = 1 if name == "layer1" else 2
            blocks = []
            for i, tc in enumerate(temporal):
                blocks.append(Bottleneck(inplanes, planes, stride if i == 0 else 1, tc))
                inplanes = planes * EXPANSION
            setattr(self, name, nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        # Kept so that the published file loads strictly; features are taken before it.
        self.fc = nn.Linear(self.feature_size, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.relu(self.bn1(self.conv1(clips))))
        x = self.maxpool2(self.layer1(x))
        x = self.layer4(self.layer3(self.layer2(x)))
        return torch.flatten(self.avgpool(x), 1)

    def seed_(self, seed: int = 0) -> "I3DResNet50":
        """Seeded random weights with realistic BatchNorm statistics, so that activations stay
        in a sane range through all 16 blocks (for tests and benchmarks without the real file)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, nn.Conv3d):
                    fan_in = module.weight[0].numel()
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                elif isinstance(module, nn.BatchNorm3d):
                    n = module.num_features
                    # The last BN of a residual branch starts small, as in zero-init-residual training.
                    low, high = (0.1, 0.3) if name.endswith("bn3") else (0.5, 1.0)
                    module.weight.copy_(low + (high - low) * torch.rand(n, generator=gen))
                    module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                    module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                    module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                elif isinstance(module, nn.Linear):
                    module.weight.copy_(0.01 * torch.randn(module.weight.shape, generator=gen))
                    module.bias.zero_()
        return self.eval()


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in an I3D weight file, read as untrusted input (weights_only=True)."""
    return read_tensor_dict(path, I3DError, "I3D weight file")


def load_state(model: I3DResNet50, state: dict[str, torch.Tensor], source: str = "I3D weights") -> None:
    """Strict load that names every missing, unexpected or mis-shaped tensor."""
    problems = state_dict_mismatches(model.state_dict(), state)
    if problems:
        raise I3DError(f"{source} does not fit I3D-ResNet50 (width {model.width}): " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_i3d(path: str | Path, width: int | None = None) -> I3DResNet50:
    """Build the trunk a weight file describes (width from conv1, classes from fc), load it
    strictly, in eval mode. `width` = 64 insists on the published network."""
    state = read_weights(path)
    if "conv1.weight" not in state or state["conv1.weight"].ndim != 5:
        found = list(state["conv1.weight"].shape) if "conv1.weight" in state else "nothing"
        raise I3DError(f"{path}: tensor 'conv1.weight': expected a 5-D Conv3d weight [width, 3, 5, 7, 7], "
                       f"found {found}: not an I3D-ResNet50 weight file")
    found_width = int(state["conv1.weight"].shape[0])
    if width is not None and width != found_width:
        raise I3DError(f"{path}: tensor 'conv1.weight': expected shape [{width}, 3, 5, 7, 7], "
                       f"found {list(state['conv1.weight'].shape)}")
    classes = int(state["fc.weight"].shape[0]) if "fc.weight" in state else PUBLISHED_CLASSES
    model = I3DResNet50(width=found_width, num_classes=classes)
    load_state(model, state, source=str(path))
    return model.eval()
