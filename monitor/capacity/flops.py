"""Floating-point work of a graph, counted from the graph itself: the multiply-adds of its
Conv, MatMul and Gemm nodes (their quantised forms too) at the given input shape, with shapes
from ONNX shape inference. Element-wise ops, pooling and the like are left out: they are a
rounding error next to the convolutions, and no machine's peak is quoted for them."""
from __future__ import annotations

import math

import onnx
from onnx import shape_inference

CONV_OPS = ("Conv", "ConvInteger", "QLinearConv")
MATMUL_OPS = ("MatMul", "MatMulInteger", "QLinearMatMul")


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def graph_flops(model: onnx.ModelProto, input_shape: list[int]) -> float:
    """FLOPs (2 per multiply-add) of one run of `model` with its first input of `input_shape`.
    Raises ValueError when a counted node's shapes cannot be inferred."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    first = model.graph.input[0]
    dims = first.type.tensor_type.shape.dim
    if len(dims) != len(input_shape):
        raise ValueError(f"graph input {first.name!r} has rank {len(dims)}, not {len(input_shape)}")
    for d, value in zip(dims, input_shape):
        d.ClearField("dim_param")
        d.dim_value = int(value)
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type not in CONV_OPS + MATMUL_OPS + ("Gemm",):
            continue
        out = shapes.get(node.output[0])
        if node.op_type in CONV_OPS:
            w = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
            if out is None or w is None:
                raise ValueError(f"{node.name or node.op_type}: shapes unknown")
            # each output element: in_channels / groups x kernel multiply-adds (w is [O, I/g, k...])
            total += math.prod(out) * math.prod(w[1:])
        elif node.op_type == "Gemm":
            a = shapes.get(node.input[0])
            if out is None or a is None:
                raise ValueError(f"{node.name or 'Gemm'}: shapes unknown")
            trans_a = any(x.name == "transA" and x.i for x in node.attribute)
            total += math.prod(out) * (a[0] if trans_a else a[1])
        else:
            a = shapes.get(node.input[0])
            if out is None or a is None:
                raise ValueError(f"{node.name or node.op_type}: shapes unknown")
            total += math.prod(out) * a[-1]
    return 2.0 * total
