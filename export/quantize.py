"""Static int8 quantisation of a backbone graph for CPUs, with ONNX Runtime's quantisation
tools: QDQ format, int8 weights per output channel, uint8 activations per tensor, ranges
calibrated on clips of real footage made by the one preprocessing path (export.footage).

Which nodes stay in fp32 is measured, not guessed:
- convolutions that read fewer than MIN_INT8_CHANNELS channels (the first layer, on pixels):
  ONNX Runtime's int8 kernels are slower than its fp32 ones there (measured on this
  project's 2-core AVX2 machine: 0.17-0.39x for a 3-channel input, 0.66x for 4; 1.2-2.9x
  from 8 channels up), and pixels lose most in 8 bits;
- then, from the input on, as many of the other quantisable layers as it takes for the
  int8 features to agree with the fp32 ones (mean cosine over held-out clips of the
  calibration footage) at `min_cosine` or better. Early layers carry small differences of
  heavy-tailed activations (the demo backbone sees frame differences: a still scene's
  activations lie below one int8 step of a moving scene's range), late layers rarely do.
At most half of the quantisable layers are given up; if the target is still missed, the
best graph found is written and the record says so (`met`: false).
"""
from __future__ import annotations

import contextlib
import inspect
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from monitor.model.integrity import sha256

MIN_INT8_CHANNELS = 8
DEFAULT_MIN_COSINE = 0.99
WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")  # the layers whose arithmetic int8 speeds up
QUANTISED_OPS = WEIGHTED_OPS
METHODS = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
           "entropy": CalibrationMethod.Entropy}
PERCENTILE = 99.99  # a heavy tail clipped, not the motion it stands for (99.9 hurt the demo backbone)


class QuantizeError(ValueError):
    """A graph that cannot be quantised; the message says why."""


class BatchReader(CalibrationDataReader):
    """Calibration batches one at a time. `__len__` and `set_range` let ONNX Runtime
    calibrate in strides of one batch, so batches of different clip sizes (crops, patches)
    can be calibrated together and no more than one batch's activations are held."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self.feeds = [{input_name: b} for b in batches]
        self.set_range(0, len(self.feeds))

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.feeds[start_index:end_index])

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self.set_range(0, len(self.feeds))


def _session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def features(path: Path, batches: list[np.ndarray], threads: int | None = None) -> np.ndarray:
    """[clips, F] features of a backbone graph on the CPU, batch by batch."""
    session = _session(path, threads)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: b})[0] for b in batches])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two [N, F] feature arrays (1 where both rows are zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    out = (a * b).sum(1) / np.maximum(na * nb, 1e-30)
    return np.where(both_zero, 1.0, out)


def weighted_layers(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(the weighted layers int8 may take, in graph order; those that stay fp32 for speed)."""
    weights = {i.name: i for i in model.graph.initializer}
    layers, narrow = [], []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        if not node.name:
            raise QuantizeError(f"a {node.op_type} node has no name; re-export the graph")
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if weights[node.input[1]].dims[1] * group < MIN_INT8_CHANNELS:
                narrow.append(node.name)
                continue
        layers.append(node.name)
    return layers, narrow


def _prepare(source: Path, out: Path) -> None:
    """ONNX Runtime's recommended pre-processing (graph optimisation, symbolic shape
    inference) before quantising; plain ONNX shape inference where the symbolic one fails."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            quant_pre_process(str(source), str(out))
        except Exception:  # symbolic shape inference does not know every graph
            quant_pre_process(str(source), str(out), skip_symbolic_shape=True)


def quantize_backbone(source: Path, out: Path, calibration: list[np.ndarray], held_out: list[np.ndarray], *,
                      min_cosine: float = DEFAULT_MIN_COSINE, method: str = "percentile",
                      threads: int | None = None, op_types=None, log=lambda text: None) -> dict:
    """Write the int8 version of the backbone graph `source` to `out`, calibrated on the
    input batches `calibration` and checked on `held_out`; returns what was done and
    measured, for the manifest's `graphs.backbone.conversion`."""
    source, out = Path(source), Path(out)
    if method not in METHODS:
        raise QuantizeError(f"calibration method {method!r}: must be one of {', '.join(METHODS)}")
    if not calibration or not held_out:
        raise QuantizeError("int8 needs calibration clips and held-out clips to check them on")
    with tempfile.TemporaryDirectory(prefix="ssrl-int8-") as tmp:
        tmp = Path(tmp)
        prepared = tmp / "prepared.onnx"
        _prepare(source, prepared)
        model = onnx.load(str(prepared))
        if len(model.graph.input) != 1:
            raise QuantizeError(f"{source}: a backbone graph has one input, this one has {len(model.graph.input)}")
        input_name = model.graph.input[0].name
        layers, narrow = weighted_layers(model)
        if not layers:
            raise QuantizeError(f"{source}: no layer that int8 would speed up ({', '.join(WEIGHTED_OPS)} "
                                f"reading at least {MIN_INT8_CHANNELS} channels)")
        reference = features(source, held_out, threads)
        reader = BatchReader(input_name, calibration)
        # One calibration, reused for every set of excluded layers, where this ONNX Runtime can.
        cache = tmp / "calibration.json"
        cached = ({"calibration_cache_path": str(cache)}
                  if "calibration_cache_path" in inspect.signature(quantize_static).parameters else {})
        extra = {"CalibStridedMinMax": 1}
        if method == "percentile":
            extra["CalibPercentile"] = PERCENTILE
        best = None
        for kept in range(0, len(layers) // 2 + 1):
            fp32_nodes = narrow + layers[:kept]
            candidate = tmp / f"int8_{kept}.onnx"
            reader.rewind()
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints a line per batch
                quantize_static(str(prepared), str(candidate), reader, quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(op_types or QUANTISED_OPS), per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                nodes_to_exclude=fp32_nodes, calibrate_method=METHODS[method],
                                extra_options=extra, **cached)
            agreement = cosines(features(candidate, held_out, threads), reference)
            mean = round(float(agreement.mean()), 5)
            log(f"  int8 with {len(fp32_nodes)} of {len(layers) + len(narrow)} layers in fp32: "
                f"feature cosine {mean:.4f} (min {agreement.min():.4f}) on {len(agreement)} held-out clips")
            if best is None or mean > best[0]:
                best = (mean, float(agreement.min()), candidate, fp32_nodes)
            if mean >= min_cosine:
                break
        mean, worst, chosen, fp32_nodes = best
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chosen, out)
    return {
        "tool": f"onnxruntime.quantization {ort.__version__} (quantize_static)",
        "format": "QDQ", "weights": "int8, per output channel", "activations": "uint8, per tensor",
        "calibration_method": f"percentile {PERCENTILE}" if method == "percentile" else method,
        "calibration_batches": len(calibration), "calibration_clips": int(sum(len(b) for b in calibration)),
        "int8_layers": len(layers) + len(narrow) - len(fp32_nodes), "fp32_layers": fp32_nodes,
        "held_out_clips": int(len(reference)),
        "feature_cosine_mean": round(mean, 5), "feature_cosine_min": round(worst, 5),
        "target_cosine": min_cosine, "met": mean >= min_cosine,
        "from_sha256": sha256(source),
    }
