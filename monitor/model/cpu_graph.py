"""A backbone graph rewritten for ONNX Runtime's CPU provider: 3-D convolutions as 2-D ones.

ONNX Runtime runs a 3-D Conv on the CPU as an im2col and one small matrix product per clip:
with many small clips (49 patch clips of 24 x 24 in a demo snippet) that product is too small
to be efficient, and the 3-D im2col is slow. A 2-D Conv instead goes to its blocked (NCHWc)
kernels, which need no im2col and batch well. So each 3-D Conv with a kernel that is 3-D in
every direction (3 x 3 x 3, as the demo backbone's) and input channels that fill the blocks (a
multiple of 8) becomes: the kt input frames of each output time stacked as channels,
then a 2-D Conv over [N * T', kt * C, H, W], with the weights reordered to match. The
result is the same convolution (equal within float rounding; tests/test_bench.py checks it).
I3D's factorised kernels (3 x 1 x 1, 1 x 3 x 3, 1 x 1 x 1) are left alone: measured on the
full-size I3D-ResNet50 rewriting them was 0.8 times the speed, on the demo backbone 1.5 times.
A Relu that follows is moved next to the 2-D Conv, where ONNX Runtime fuses it. The
transposes into and out of the [N, T, C, H, W] order cancel between consecutive rewritten
convolutions (ONNX Runtime's transpose optimiser removes them).

Only the CPU provider gets this graph: TensorRT and CUDA run 3-D convolutions natively. The
bundle's file is never changed (its checksum stays valid); this is done in memory at load.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

PREFIX = "cpu_conv2d/"
BLOCK = 8  # channels per block of ONNX Runtime's NCHWc kernels (AVX2: 8; AVX-512: 16 is a multiple)


def _attributes(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rewritable(node, weights: dict) -> bool:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.input[1] not in weights:
        return False
    w = weights[node.input[1]]
    a = _attributes(node)
    return (w.ndim == 5 and a.get("group", 1) == 1 and all(d == 1 for d in a.get("dilations", [1, 1, 1]))
            and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and w.shape[1] % BLOCK == 0
            and w.shape[2] > 1 and max(w.shape[3:]) > 1  # a kernel 3-D in earnest, such as 3 x 3 x 3
            and (len(node.input) < 3 or node.input[2] in weights))


def conv3d_as_conv2d(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """-> (a rewritten copy of `model`, the number of Conv nodes rewritten)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    added: list = []
    count = 0

    def const(value, tag: str) -> str:
        name = f"{PREFIX}{count}/{tag}"
        added.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    nodes, dropped = [], set()
    for node in graph.node:
        if id(node) in dropped:
            continue
        if not _rewritable(node, weights):
            nodes.append(node)
            continue
        count += 1
        p = f"{PREFIX}{count}/"
        w = weights[node.input[1]]
        cout, cin, kt, kh, kw = w.shape
        a = _attributes(node)
        st, sh, sw = a.get("strides", [1, 1, 1])
        pt0, ph0, pw0, pt1, ph1, pw1 = a.get("pads", [0] * 6)
        out = node.output[0]
        after = consumers.get(out, [])
        relu = after[0] if len(after) == 1 and after[0].op_type == "Relu" and out not in outputs else None
        final = relu.output[0] if relu is not None else out
        x = p + "ntchw"
        new = [helper.make_node("Transpose", [node.input[0]], [x], perm=[0, 2, 1, 3, 4], name=p + "to_ntchw")]
        if pt0 or pt1:
            new.append(helper.make_node("Pad", [x, const(np.array([0, pt0, 0, 0, 0, 0, pt1, 0, 0, 0], np.int64), "pads")],
                                        [p + "padded"], name=p + "pad_time"))
            x = p + "padded"
        if kt == 1 and st == 1:
            stacked = x
        else:  # output time t reads input frames t*st .. t*st + kt - 1: kt strided slices, as channels
            frames = []
            for i in range(kt):
                end = -(kt - 1 - i) if i < kt - 1 else 2 ** 62
                new.append(helper.make_node("Slice", [x, const([i], f"start{i}"), const([end], f"end{i}"),
                                                      const([1], f"axis{i}"), const([st], f"step{i}")],
                                            [p + f"frames{i}"], name=p + f"frames{i}"))
                frames.append(p + f"frames{i}")
            stacked = p + "stacked"
            new.append(helper.make_node("Concat", frames, [stacked], axis=2, name=p + "stack"))
        new += [
            helper.make_node("Shape", [stacked], [p + "shape5"], name=p + "shape5"),
            helper.make_node("Slice", [p + "shape5", const([3], "hw0"), const([5], "hw1")], [p + "hw"], name=p + "hw"),
            helper.make_node("Concat", [const(np.array([-1, kt * cin], np.int64), "nc"), p + "hw"], [p + "shape4"],
                             axis=0, name=p + "shape4"),
            helper.make_node("Reshape", [stacked, p + "shape4"], [p + "x4"], name=p + "to_4d"),
        ]
        w2 = np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4).reshape(cout, kt * cin, kh, kw))  # channel = frame, then C
        inputs = [p + "x4", const(w2.astype(w.dtype), "weight")]
        if len(node.input) > 2 and node.input[2]:
            inputs.append(node.input[2])
        new.append(helper.make_node("Conv", inputs, [p + "y4"], kernel_shape=[kh, kw], strides=[sh, sw],
                                    pads=[ph0, pw0, ph1, pw1], name=p + "conv2d"))
        y4 = p + "y4"
        if relu is not None:
            new.append(helper.make_node("Relu", [y4], [p + "y4_relu"], name=p + "relu"))
            y4 = p + "y4_relu"
            dropped.add(id(relu))
        new += [
            helper.make_node("Slice", [p + "shape5", const([0], "nt0"), const([2], "nt1")], [p + "nt"], name=p + "nt"),
            helper.make_node("Shape", [y4], [p + "shape_out"], start=1, name=p + "shape_out"),
            helper.make_node("Concat", [p + "nt", p + "shape_out"], [p + "shape5_out"], axis=0, name=p + "shape5_out"),
            helper.make_node("Reshape", [y4, p + "shape5_out"], [p + "y5"], name=p + "to_5d"),
            helper.make_node("Transpose", [p + "y5"], [final], perm=[0, 2, 1, 3, 4], name=p + "to_ncthw"),
        ]
        nodes += new
    if not count:
        return model, 0
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    return model, count
