"""A backbone graph that takes pixels: uint8 frames [N, T, H, W, 3] in the decoder's BGR order,
with the layout change, the channel order and the scaling to [-1, 1] done inside the graph.

Why: a float clip is four times the bytes of its pixels, and building it (transpose, flip,
scale) on the host costs about as much as resizing the frames; inside the graph it is one
cheap pass, and on a GPU the frames cross the bus once, as uint8.

The rewrite is graph surgery with the `onnx` library only (no PyTorch), so that an existing
bundle, the shipped demo bundle included, is upgraded in place of a re-export:

    python -m export --bundle monitor/demo_bundle --uint8-input --out bundles/demo-u8
    python -m export.pixel_input --bundle DIR --out DIR2     (the same, importing no PyTorch at all)

The manifest records the new input in its `backbone_input` field; a bundle without that field
takes float clips [N, 3, T, H, W] RGB, and the monitor runs both.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.bundle_copy import copy_bundle, rewrite_manifest
from monitor.model.manifest import BACKBONE_INPUTS, MANIFEST_NAME, PIXEL_INPUT, BundleError, Manifest

PREFIX = "pixel_input/"  # names of the nodes and tensors this adds


def pixel_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float backbone (clips [N, 3, T, H, W] RGB in [-1, 1]) -> the same backbone taking
    clips [N, T, H, W, 3] BGR uint8. The float graph's nodes are kept as they are."""
    graph = model.graph
    (name,) = BACKBONE_INPUTS
    inputs = [i for i in graph.input if i.name == name]
    if not inputs:
        raise BundleError(f"backbone graph has no input named {name!r}")
    old = inputs[0]
    if old.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise BundleError(f"backbone graph input {name!r} is not float32: already a pixel-input graph?")
    dims = [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim]
    if len(dims) != 5 or dims[1] != 3:
        raise BundleError(f"backbone graph input {name!r} has shape {dims}, expected [N, 3, T, H, W]")
    scaled = PREFIX + "clips_float"
    for node in graph.node:  # the float graph now reads the scaled clips
        node.input[:] = [scaled if i == name else i for i in node.input]
    n, _, t, h, w = dims
    new_input = helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, [n, t, h, w, 3])
    graph.input.remove(old)
    graph.input.insert(0, new_input)

    def const(tag: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), PREFIX + tag))
        return PREFIX + tag

    p = PREFIX
    prefix = [
        # uint8 moves first: a quarter of the bytes of the float tensor.
        helper.make_node("Transpose", [name], [p + "ncthw"], perm=[0, 4, 1, 2, 3], name=p + "layout"),
        # BGR -> RGB: channels are whole planes here, so reversing them copies three blocks.
        helper.make_node("Slice", [p + "ncthw", const("start", [-1]), const("end", [-(2 ** 62)]), const("axis", [1]),
                                   const("step", [-1])], [p + "rgb"], name=p + "rgb_order"),
        # x * 2 / 255 - 1, as monitor.video.preprocess.scale (within a float32 rounding):
        # DequantizeLinear casts and scales in one pass.
        helper.make_node("DequantizeLinear", [p + "rgb", const("gain", np.float32(2.0 / 255.0)), const("zero", np.uint8(0))],
                         [p + "gained"], name=p + "gain"),
        helper.make_node("Add", [p + "gained", const("offset", np.float32(-1.0))], [scaled], name=p + "offset"),
    ]
    for node in reversed(prefix):
        graph.node.insert(0, node)
    return model


def upgrade_bundle(source: str | Path, out: str | Path) -> Manifest:
    """Copy bundle `source` to `out` (the same directory: in place) with a pixel-input backbone,
    its manifest's backbone_input, input shape and checksum updated."""
    source, out = Path(source), Path(out)
    manifest = Manifest.read(source)
    where = source / MANIFEST_NAME
    if "backbone" not in manifest.graphs:
        raise BundleError(f"{where}: has no backbone graph to give a pixel input")
    if manifest.backbone_input == PIXEL_INPUT:
        raise BundleError(f"{where}: field 'backbone_input' says the backbone takes pixels already")
    copy_bundle(source, out)
    spec = manifest.graphs["backbone"]
    path = out / spec.file
    model = pixel_input(onnx.load(str(path)))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    n, _, t, h, w = spec.inputs["clips"]
    spec.inputs = {"clips": [n, t, h, w, 3]}
    manifest.backbone_input = dict(PIXEL_INPUT)
    return rewrite_manifest(out, manifest, ("graphs", "backbone_input", "source"), [spec.file])


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m export.pixel_input",
                                description="Give a bundle's backbone a uint8 pixel input (onnx only, no PyTorch).")
    p.add_argument("--bundle", type=Path, required=True, help="the bundle to convert (left as it is)")
    p.add_argument("--out", type=Path, required=True, help="the new bundle's directory")
    args = p.parse_args(argv)
    if not (args.bundle / MANIFEST_NAME).is_file():
        print(f"error: --bundle {args.bundle}: not a bundle directory (no {MANIFEST_NAME})", file=sys.stderr)
        return 2
    try:
        manifest = upgrade_bundle(args.bundle, args.out)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    i = manifest.backbone_input
    print(f"wrote {args.out}: the backbone takes {i['dtype']} {i['layout']} {i['channels']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
