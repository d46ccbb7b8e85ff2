"""The SSRL temporal head read back from a bundle's temporal graph, to give a bundle exported
before `temporal_at` existed that graph (`python -m export --bundle DIR --temporal-at --out
DIR2`), the shipped demo bundle among them, without its checkpoint.

The exporter keeps most weights under their module names (`model.Aggregate_clip.conv_1.0.weight`);
the rest it renamed while folding: the non-local block's W convolution has its BatchNorm folded
in, and the classifier's Linear layers became MatMuls of transposed weights. Those are found by
the module path ONNX gives each node's output (`/classfier/fc1/MatMul_output_0`); equal tensors
(zero biases) it stored once, the others named by Identity nodes. What is read
back is then checked: the head in PyTorch must give the graph's own scores, or nothing is written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from export.bundle_copy import copy_bundle, rewrite_manifest
from export.onnx_graphs import TemporalHead, export_temporal_at
from monitor.model.bundle import Bundle
from monitor.model.manifest import MANIFEST_NAME, BundleError, GraphSpec, Manifest
from training.ssrl import SSRL, SSRLConfig

PREFIX = "model."
HEAD = ("Aggregate_clip.", "classfier.")  # the temporal head's modules (the rest is the spatial head)
AGREEMENT = 1e-5                          # largest |score difference| to the graph accepted


def _module_of(output: str) -> str:
    """'/Aggregate_clip/non_local/W/W.0/Conv_output_0' -> 'Aggregate_clip.non_local.W.0': a
    Sequential's children are scoped as 'W.0' under 'W', which the path already names."""
    parts = output.strip("/").split("/")[:-1]
    kept = [p for p, after in zip(parts, parts[1:] + [""]) if not after.startswith(p + ".")]
    return ".".join(kept)


def read_weights(graph_file: Path) -> dict[str, torch.Tensor]:
    """The temporal graph's tensors under the head's state-dict names."""
    model = onnx.load(str(graph_file))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:  # equal tensors (zero biases) are stored once, aliased by Identity
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    found = {name[len(PREFIX):]: value for name, value in inits.items() if name.startswith(PREFIX)}
    for node in model.graph.node:
        unnamed = [i for i in node.input[1:] if i in inits and not i.startswith(PREFIX)]
        if not unnamed or not node.output:
            continue
        module = _module_of(node.output[0])
        if node.op_type == "Conv" and len(node.input) >= 2 and node.input[1] in unnamed:
            found[f"{module}.weight"] = inits[node.input[1]]
            if len(node.input) > 2 and node.input[2] in unnamed:
                found[f"{module}.bias"] = inits[node.input[2]]
        elif node.op_type == "MatMul" and node.input[1] in unnamed:
            found[f"{module}.weight"] = inits[node.input[1]].T
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in found.items()}


def temporal_head(bundle: Bundle) -> SSRL:
    """An SSRL whose temporal head (Aggregate_clip, classifier) is the bundle's temporal graph,
    checked against it; BatchNorms the exporter folded into a convolution become identities."""
    m = bundle.manifest
    graph_file = bundle.path / m.graphs["temporal"].file
    where = str(graph_file)
    if m.graphs["temporal"].precision != "fp32":
        raise BundleError(f"{where}: is {m.graphs['temporal'].precision}; add temporal_at to its fp32 bundle, "
                          "then convert that")
    model = SSRL(SSRLConfig(stage=1, crops=m.crops, feature_size=m.feature_size)).eval()
    weights = read_weights(graph_file)
    state = {k: v for k, v in model.state_dict().items() if k.startswith(HEAD) and "num_batches_tracked" not in k}
    missing = sorted(k for k in state if k not in weights)
    folded = {k.rsplit(".", 1)[0] for k in missing}
    for module_name in folded:
        module = model.get_submodule(module_name)
        if not isinstance(module, nn.BatchNorm1d):
            raise BundleError(f"{where}: cannot read the temporal head back from it "
                              f"(no weights for {module_name}); export the bundle again from its checkpoint")
        parent, _, child = module_name.rpartition(".")
        model.get_submodule(parent)._modules[child] = nn.Identity()  # folded into the conv before it
    for key, value in weights.items():
        if key in state and state[key].shape != value.shape:
            raise BundleError(f"{where}: tensor for {key} is {list(value.shape)}, the head needs "
                              f"{list(state[key].shape)}")
    model.load_state_dict({k: v for k, v in weights.items() if k in state}, strict=False)
    features = np.random.default_rng(0).standard_normal((2, 9, m.crops, m.feature_size)).astype(np.float32)
    with torch.no_grad():
        ours = TemporalHead(model)(torch.from_numpy(features)).numpy()
    difference = float(np.abs(ours - bundle.scores(features)).max())
    if not difference <= AGREEMENT:
        raise BundleError(f"{where}: the temporal head read back from it scores {difference:.2e} away from the "
                          "graph; export the bundle again from its checkpoint")
    return model


def add_temporal_at(bundle: Bundle, out: Path) -> Manifest:
    """Copy the loaded bundle to `out` with a temporal_at graph made from its temporal graph."""
    source, out = bundle.path, Path(out)
    where = source / MANIFEST_NAME
    if bundle.manifest.stage == 0:
        raise BundleError(f"{where}: is a backbone-only bundle (stage 0); it has no temporal head")
    if "temporal_at" in bundle.manifest.graphs:
        raise BundleError(f"{where}: field 'graphs.temporal_at': the bundle has it already")
    model = temporal_head(bundle)
    copy_bundle(source, out)
    file = "temporal_at.onnx"
    io = export_temporal_at(model, out / file)
    manifest = Manifest.read(out)
    manifest.graphs["temporal_at"] = GraphSpec(file, io["inputs"], io["outputs"])
    manifest.source["temporal_at"] = f"read back from {bundle.manifest.graphs['temporal'].file} (--temporal-at)"
    return rewrite_manifest(out, manifest, ("graphs", "source"), [file])
