"""The model bundle manifest: the contract between `export` (which writes it) and the
monitor (which reads it). Plain JSON, validated field by field so that a bad bundle is
refused with the name of the field and the reason."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
SNIPPET_LENGTH = 16
DEFAULT_WINDOW = 32
DEFAULT_THRESHOLD = 0.5
# `training_data` of a bundle trained on the synthetic camera's footage only (the demo): its
# scores mean nothing on real cameras, and the monitor says so.
SYNTHETIC_TRAINING = "synthetic"

# Graph input/output names: fixed, so tools written against one bundle work with all.
SPATIAL_INPUTS = ("crops", "patches")
SPATIAL_OUTPUTS = ("fused",)
TEMPORAL_INPUTS = ("features",)
TEMPORAL_OUTPUTS = ("scores",)
# temporal_at: the temporal head at chosen positions of the window (export.temporal_at), what
# the live engine runs; a bundle without it is scored through `temporal` alone.
TEMPORAL_AT_INPUTS = ("features", "positions")
TEMPORAL_AT_OUTPUTS = ("scores",)
BACKBONE_INPUTS = ("clips",)
BACKBONE_OUTPUTS = ("features",)
# Numeric precision of a graph's arithmetic: fp32 as exported, int8 (statically quantised
# for CPUs) or fp16 (for GPUs); inputs and outputs keep their types whatever the precision.
PRECISIONS = ("fp32", "int8", "fp16")

# What the backbone's `clips` input takes (the manifest's "backbone_input"; absent: float).
FLOAT_INPUT = {"dtype": "float32", "layout": "NCTHW", "channels": "RGB"}   # [N, 3, T, H, W] in [-1, 1]
PIXEL_INPUT = {"dtype": "uint8", "layout": "NTHWC", "channels": "BGR"}     # [N, T, H, W, 3] as decoded
BACKBONE_INPUT_FORMATS = (FLOAT_INPUT, PIXEL_INPUT)


class BundleError(ValueError):
    """A model bundle that cannot be used; the message names the file or field."""


@dataclass
class GraphSpec:
    file: str
    inputs: dict[str, list]   # name -> shape (ints for fixed dims, strings for symbolic ones)
    outputs: dict[str, list]
    precision: str = "fp32"
    # How a converted graph was made from its fp32 graph and what that was measured to cost
    # (calibration videos, nodes kept in fp32, feature cosine, score difference).
    conversion: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"file": self.file, "inputs": self.inputs, "outputs": self.outputs}
        if self.precision != "fp32" or self.conversion:  # fp32 manifests stay as they were
            d.update(precision=self.precision, conversion=self.conversion)
        return d


def patch_counts(grids) -> list[int]:
    """Patches per grid: a grid rc (e.g. 23) is r rows by c columns."""
    return [(g // 10) * (g % 10) for g in grids]


@dataclass
class Manifest:
    stage: int
    grids: list[int]
    crops: int
    feature_size: int
    graphs: dict[str, GraphSpec]
    snippet_length: int = SNIPPET_LENGTH
    window: int = DEFAULT_WINDOW
    threshold: float = DEFAULT_THRESHOLD
    # Consecutive snippets at or above the threshold before an alert starts, as calibrated
    # with the threshold (a model whose scores spike for one snippet on normal video needs 2).
    min_snippets: int = 1
    preprocessing: dict = field(default_factory=dict)
    # What footage the model was trained on, in words ("synthetic": the synthetic camera's
    # only; e.g. "ShanghaiTech"); "" when the exporter was not told.
    training_data: str = ""
    producer: str = ""
    created: str = ""
    source: dict = field(default_factory=dict)
    schema: int = MANIFEST_SCHEMA
    backbone_input: dict = field(default_factory=lambda: dict(FLOAT_INPUT))

    @property
    def takes_pixels(self) -> bool:
        """The backbone takes uint8 pixels [N, T, H, W, 3] BGR (and scales them itself)."""
        return self.backbone_input == PIXEL_INPUT

    @property
    def patches(self) -> list[int]:
        return patch_counts(self.grids)

    def snippet_bytes(self) -> int:
        """uint8 backbone input of one snippet (crops and patches; the preprocessing field's
        sizes, the published 224 where it has none)."""
        pre = self.preprocessing or {}
        crop, patch = int(pre.get("crop_size", 224)), int(pre.get("patch_size", 224))
        clips = self.crops * crop ** 2 + (sum(self.patches) * patch ** 2 if self.stage > 1 else 0)
        return 3 * self.snippet_length * clips

    @property
    def synthetic_only(self) -> bool:
        return self.training_data == SYNTHETIC_TRAINING

    def to_dict(self) -> dict:
        return {
            "schema": self.schema,
            "producer": self.producer,
            "created": self.created,
            "stage": self.stage,
            "grids": self.grids,
            "patches": self.patches,
            "crops": self.crops,
            "feature_size": self.feature_size,
            "snippet_length": self.snippet_length,
            "window": self.window,
            "threshold": self.threshold,
            "min_snippets": self.min_snippets,
            "preprocessing": self.preprocessing,
            **({"training_data": self.training_data} if self.training_data else {}),
            "backbone_input": self.backbone_input,
            "graphs": {name: g.to_dict() for name, g in self.graphs.items()},
            "source": self.source,
        }

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> "Manifest":
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise BundleError(f"{path}: missing; a model bundle is a directory with {MANIFEST_NAME} and ONNX graphs")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = MANIFEST_NAME) -> "Manifest":
        def need(key, kind, check=None, why=""):
            if key not in data:
                raise BundleError(f"{source}: field '{key}' is missing")
            value = data[key]
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                raise BundleError(f"{source}: field '{key}' must be {getattr(kind, '__name__', kind)}, got {value!r}")
            if check is not None and not check(value):
                raise BundleError(f"{source}: field '{key}' = {value!r}: {why}")
            return value

        schema = need("schema", int, lambda v: v <= MANIFEST_SCHEMA,
                      f"this monitor reads manifest schema up to {MANIFEST_SCHEMA}")
        # Stage 0: a backbone-only bundle (feature extraction, no SSRL head).
        stage = need("stage", int, lambda v: 0 <= v <= 4, "stage must be 1-4, or 0 for a backbone-only bundle")
        grids = need("grids", list, lambda v: all(isinstance(g, int) and 11 <= g <= 99 and g % 10 for g in v),
                     "grids are two-digit rows·columns numbers such as 23")
        if len(grids) != max(stage - 1, 0):
            raise BundleError(f"{source}: field 'grids' = {grids}: stage {stage} has {max(stage - 1, 0)} grids")
        if "patches" in data and data["patches"] != patch_counts(grids):
            raise BundleError(f"{source}: field 'patches' = {data['patches']} disagrees with grids {grids}")
        crops = need("crops", int, lambda v: v >= 1, "must be at least 1")
        feature_size = need("feature_size", int, lambda v: v >= 8 and v % 8 == 0, "must be a positive multiple of 8")
        snippet_length = need("snippet_length", int, lambda v: v >= 1, "must be at least 1")
        window = need("window", int, lambda v: v >= 1, "must be at least 1")
        threshold = need("threshold", (int, float), lambda v: 0.0 <= v <= 1.0, "must lie in [0, 1]")
        min_snippets = need("min_snippets", int, lambda v: v >= 1, "must be at least 1") if "min_snippets" in data else 1
        training_data = need("training_data", str) if "training_data" in data else ""
        raw_graphs = need("graphs", dict)
        graphs = {}
        for name, spec in raw_graphs.items():
            where = f"graphs.{name}"
            if not isinstance(spec, dict) or not isinstance(spec.get("file"), str):
                raise BundleError(f"{source}: field '{where}.file' is missing")
            for part in ("inputs", "outputs"):
                if not isinstance(spec.get(part), dict):
                    raise BundleError(f"{source}: field '{where}.{part}' must map names to shapes")
            precision = spec.get("precision", "fp32")
            if precision not in PRECISIONS:
                raise BundleError(f"{source}: field '{where}.precision' = {precision!r}: must be one of "
                                  f"{', '.join(PRECISIONS)}")
            conversion = spec.get("conversion", {})
            if not isinstance(conversion, dict):
                raise BundleError(f"{source}: field '{where}.conversion' must be an object")
            graphs[name] = GraphSpec(spec["file"], spec["inputs"], spec["outputs"], precision, conversion)
        if stage == 0:
            if "backbone" not in graphs:
                raise BundleError(f"{source}: field 'graphs.backbone' is missing (stage 0 is a backbone-only bundle)")
            head = sorted(set(graphs) & {"spatial", "temporal", "temporal_at"})
            if head:
                raise BundleError(f"{source}: field 'graphs.{head[0]}' present but stage 0 is a backbone-only bundle")
        elif "temporal" not in graphs:
            raise BundleError(f"{source}: field 'graphs.temporal' is missing")
        backbone_input = data.get("backbone_input", FLOAT_INPUT)
        if backbone_input not in BACKBONE_INPUT_FORMATS:
            raise BundleError(f"{source}: field 'backbone_input' = {backbone_input!r}: must be one of "
                              f"{', '.join(json.dumps(f) for f in BACKBONE_INPUT_FORMATS)}")
        if stage > 1 and "spatial" not in graphs:
            raise BundleError(f"{source}: field 'graphs.spatial' is missing (stage {stage} has patch grids)")
        if stage == 1 and "spatial" in graphs:
            raise BundleError(f"{source}: field 'graphs.spatial' present but stage 1 has no patch grids")
        return cls(stage=stage, grids=grids, crops=crops, feature_size=feature_size, graphs=graphs,
                   snippet_length=snippet_length, window=window, threshold=float(threshold), min_snippets=min_snippets,
                   preprocessing=data.get("preprocessing", {}) or {}, training_data=training_data,
                   producer=data.get("producer", ""),
                   created=data.get("created", ""), source=data.get("source", {}) or {}, schema=schema,
                   backbone_input=dict(backbone_input))
