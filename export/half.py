"""fp16 graphs for GPUs: every float tensor of a graph in half precision, its inputs and
outputs kept as they were (float32 features, float32 or uint8 clips), so the monitor feeds
an fp16 bundle exactly as it feeds an fp32 one. ONNX Runtime's own converter
(onnxruntime.transformers.float16) does the rewriting; nodes it knows have no fp16 kernel
stay in fp32 behind casts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from monitor.model.integrity import sha256
from export.quantize import cosines
from monitor.model.bundle import Bundle
from monitor.video.preprocess import Geometry, Preprocessor

TOOL = "onnxruntime.transformers.float16 (keep_io_types)"
# Also kept in fp32: (de)quantisation nodes, whose scales must stay float32 before opset 19
# (a pixel-input backbone scales its uint8 frames with a DequantizeLinear).
KEEP_FP32 = list(DEFAULT_OP_BLOCK_LIST) + ["DequantizeLinear", "QuantizeLinear"]


def to_fp16(source: Path, out: Path) -> dict:
    """Write the fp16 version of graph `source` to `out`; the conversion record."""
    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True, op_block_list=KEEP_FP32)
    onnx.save(model, str(out))
    return {"tool": TOOL, "from_sha256": sha256(Path(source))}


def _features(bundle: Bundle, pre: Preprocessor | None, snippets: list[np.ndarray], rng) -> tuple:
    """Crop [T, C, F] and patch [T, ΣP, F] features (patches None at stage 1) of the
    snippets through `bundle`'s backbone, or seeded stand-ins for a bundle without one."""
    m = bundle.manifest
    p = sum(m.patches)
    if pre is None:
        crops = rng.normal(0, 1, (len(snippets), m.crops, m.feature_size)).astype(np.float32)
        patches = rng.normal(0, 1, (len(snippets), p, m.feature_size)).astype(np.float32) if p else None
        return crops, patches
    crops, patches = [], []
    for frames in snippets:
        c, q = pre.snippet(frames)
        crops.append(bundle.backbone(c))
        if q is not None and m.stage > 1:
            patches.append(bundle.backbone(q))
    return np.stack(crops), (np.stack(patches) if patches else None)


def _scores(bundle: Bundle, crops: np.ndarray, patches: np.ndarray | None) -> np.ndarray:
    """The snippets scored as one window, as offline scoring does: [T]."""
    return bundle.scores(bundle.fuse(crops, patches)[None])[0]


def measure(fp32_dir: Path, fp16_dir: Path, snippets: list[np.ndarray]) -> dict:
    """The fp16 bundle against its fp32 twin on the CPU, on the same snippets: the score
    difference with the same (fp32) features into both heads, the difference end to end
    (each bundle's own backbone), and the backbone's feature agreement.

    On the CPU, ONNX Runtime runs fp16 nodes it has no fp16 kernel for in fp32 behind casts:
    this measures the rounding of weights and activations to fp16, not a GPU's fp16
    arithmetic, which `bench` on that GPU measures."""
    a, b = Bundle(fp32_dir, providers="cpu"), Bundle(fp16_dir, providers="cpu")
    rng = np.random.default_rng(0)
    pre = Preprocessor(Geometry.from_manifest(a.manifest)) if a.has_backbone else None
    crops, patches = _features(a, pre, snippets, rng)
    out = {"measured_on": "CPU provider", "snippets": len(crops)}
    if pre is not None:
        rng = np.random.default_rng(0)
        crops16, patches16 = _features(b, pre, snippets, rng)
        both = [(crops, crops16)] + ([(patches, patches16)] if patches is not None else [])
        agreement = np.concatenate([cosines(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])) for x, y in both])
        out.update(feature_cosine_mean=round(float(agreement.mean()), 6),
                   feature_cosine_min=round(float(agreement.min()), 6))
    if a.manifest.stage >= 1:
        reference = _scores(a, crops, patches)
        same = np.abs(_scores(b, crops, patches) - reference)
        out.update(score_max_abs_diff=round(float(same.max()), 6), score_mean_abs_diff=round(float(same.mean()), 6))
        if pre is not None:
            whole = np.abs(_scores(b, crops16, patches16) - reference)
            out.update(end_to_end_score_max_abs_diff=round(float(whole.max()), 6))
    return out
