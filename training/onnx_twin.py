"""The PyTorch twin of a bundle's backbone graph, for `run_monitor.py bench`'s
backbone_ort_vs_torch: the graph's own nodes run one by one as PyTorch eager ops (F.conv3d
and so on), with the graph's own weights, so that both runtimes compute the same network on
the same inputs (the twin's output is checked against ONNX Runtime's). Batch normalisation
was folded into the convolutions at export, so the twin runs no more ops than the graph.

    python -m training.onnx_twin --bundle DIR --inputs clips.npz --threads 2 --repeats 5

prints one JSON object: seconds per call of each input for ONNX Runtime (the monitor's
Bundle, as the engine runs it) and PyTorch, interleaved so that both see the same load, and
their largest relative difference. The monitor runs this in a subprocess: it never imports
torch itself, and PyTorch's threads stay out of its process.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

DTYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.UINT8: torch.uint8,
          onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32}


def _attributes(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads(pads: list[int]) -> tuple[list[int], bool]:
    """ONNX pads (begins, then ends) -> torch's symmetric padding, or False when asymmetric."""
    half = len(pads) // 2
    begin, end = pads[:half], pads[half:]
    return begin, begin == end


def _slice(x, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = int(axis) % x.dim()
        n = x.shape[axis]
        start, end, step = int(start), int(end), int(step)
        if step > 0:
            x = x.narrow(axis, *_range(start, end, n))
            x = x[(slice(None),) * axis + (slice(None, None, step),)] if step > 1 else x
        else:  # torch has no negative steps: flip, then slice forward
            first = min(max(start + n if start < 0 else start, -1), n - 1)
            last = max(min(end + n if end < 0 else end, n), -1)
            idx = torch.arange(first, last, step, device=x.device)
            x = x.index_select(axis, idx)
    return x


def _range(start: int, end: int, n: int) -> tuple[int, int]:
    start = max(0, min(n, start + n if start < 0 else start))
    end = max(0, min(n, end + n if end < 0 else end))
    return start, max(0, end - start)


class OnnxTwin(torch.nn.Module):
    """Runs the nodes of an ONNX graph with PyTorch ops (the subset backbones use)."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        self.graph = model.graph
        self.weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = dict(self.weights)
        env[self.input_name] = x
        for node in self.graph.node:
            args = [env[name] if name else None for name in node.input]
            out = self._run(node, args, _attributes(node))
            env[node.output[0]] = out
        return env[self.output_name]

    def _run(self, node, args, a):  # noqa: C901 - one branch per op, as a table would be
        op = node.op_type
        if op == "Conv":
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else None
            pads, symmetric = _pads(a.get("pads", [0] * (2 * (w.dim() - 2))))
            if not symmetric:
                raise ValueError(f"{node.name}: asymmetric padding is not supported by the twin")
            conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[w.dim()]
            return conv(x, w, b, stride=a.get("strides", 1), padding=pads, dilation=a.get("dilations", 1),
                        groups=a.get("group", 1))
        if op == "Relu":
            return torch.relu(args[0])
        if op in ("Add", "Sub", "Mul", "Div"):
            return {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[op](args[0], args[1])
        if op == "MaxPool":
            pads, symmetric = _pads(a.get("pads", [0] * (2 * len(a["kernel_shape"]))))
            pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(a["kernel_shape"])]
            return pool(args[0], a["kernel_shape"], a.get("strides", a["kernel_shape"]), pads,
                        ceil_mode=bool(a.get("ceil_mode", 0)))
        if op == "GlobalAveragePool":
            return args[0].mean(dim=tuple(range(2, args[0].dim())), keepdim=True)
        if op == "ReduceMean":
            axes = a.get("axes") or (args[1].tolist() if len(args) > 1 and args[1] is not None else None)
            axes = tuple(range(args[0].dim())) if axes is None else tuple(axes)
            return args[0].mean(dim=axes, keepdim=bool(a.get("keepdims", 1)))
        if op == "Flatten":
            return torch.flatten(args[0], a.get("axis", 1))
        if op == "Transpose":
            return args[0].permute(*a["perm"])
        if op == "Slice":
            return _slice(args[0], *[None if t is None else t.tolist() for t in args[1:]])
        if op == "DequantizeLinear":
            zero = args[2].float() if len(args) > 2 and args[2] is not None else 0.0
            return (args[0].float() - zero) * args[1]
        if op == "Cast":
            return args[0].to(DTYPES[a["to"]])
        if op == "Reshape":
            return args[0].reshape([int(v) for v in args[1].tolist()])
        if op == "Concat":
            return torch.cat(args, dim=a["axis"])
        if op in ("Identity", "Dropout"):
            return args[0]
        if op == "Gemm":
            x, w = args[0], args[1]
            x = x.t() if a.get("transA", 0) else x
            w = w.t() if a.get("transB", 0) else w
            y = a.get("alpha", 1.0) * (x @ w)
            return y + a.get("beta", 1.0) * args[2] if len(args) > 2 else y
        if op == "MatMul":
            return args[0] @ args[1]
        if op == "Constant":
            return torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
        raise ValueError(f"{node.name}: op {op} is not supported by the PyTorch twin")


def compare(bundle_dir: str, inputs: list[np.ndarray], threads: int, repeats: int) -> dict:
    """ONNX Runtime (the monitor's Bundle) and the PyTorch twin on the same inputs, timed in
    alternating rounds; -> per input, the best seconds per call of each, and the agreement."""
    from monitor.model.bundle import Bundle  # the engine's own session settings
    torch.set_num_threads(threads)
    bundle = Bundle(bundle_dir, threads=threads)
    twin = OnnxTwin(onnx.load(str(bundle.path / bundle.manifest.graphs["backbone"].file))).eval()
    # PyTorch gets the batch in the pieces ONNX Runtime is given (Bundle.backbone_pieces):
    # both runtimes then see the same cache-sized calls.
    feeds = [[torch.from_numpy(np.ascontiguousarray(piece)) for piece in bundle.backbone_pieces(np.asarray(x))]
             for x in inputs]
    ort_s = [float("inf")] * len(inputs)
    torch_s = [float("inf")] * len(inputs)
    worst = 0.0
    for i, (x, t) in enumerate(zip(inputs, feeds)):  # warm-up and agreement
        want, got = bundle.backbone(x), torch.cat([twin(piece) for piece in t]).numpy()
        worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)))
    for _ in range(repeats):
        for i, (x, t) in enumerate(zip(inputs, feeds)):
            started = time.perf_counter()
            bundle.backbone(x)
            ort_s[i] = min(ort_s[i], time.perf_counter() - started)
            time.sleep(0.05)  # let the other runtime's worker threads go idle first
            started = time.perf_counter()
            for piece in t:
                twin(piece)
            torch_s[i] = min(torch_s[i], time.perf_counter() - started)
            time.sleep(0.05)
    return {"ort_s": ort_s, "torch_s": torch_s, "max_relative_difference": worst, "torch": torch.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.onnx_twin", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="model bundle with a backbone")
    p.add_argument("--inputs", required=True, help=".npz of backbone inputs, one array per call")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with np.load(args.inputs) as data:
        inputs = [data[k] for k in sorted(data.files)]
    print(json.dumps(compare(args.bundle, inputs, args.threads, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
