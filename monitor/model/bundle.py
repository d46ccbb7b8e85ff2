"""Loading a model bundle with ONNX Runtime, and refusing one whose graphs and manifest disagree."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from monitor.model.manifest import (BACKBONE_INPUTS, BACKBONE_OUTPUTS, SPATIAL_INPUTS, SPATIAL_OUTPUTS,
                              TEMPORAL_INPUTS, TEMPORAL_OUTPUTS, BundleError, Manifest)
from monitor.model.integrity import check_graph
from monitor.model.providers import create_session

EXPECTED_IO = {
    "spatial": (SPATIAL_INPUTS, SPATIAL_OUTPUTS),
    "temporal": (TEMPORAL_INPUTS, TEMPORAL_OUTPUTS),
    "backbone": (BACKBONE_INPUTS, BACKBONE_OUTPUTS),
}


def _check_io(name: str, kind: str, manifest_io: dict, session_io: list, source: str) -> None:
    found = {a.name: a.shape for a in session_io}
    if set(found) != set(manifest_io):
        raise BundleError(f"{source}: field 'graphs.{name}.{kind}' lists {sorted(manifest_io)} "
                          f"but {name} graph has {sorted(found)}")
    for tensor, shape in manifest_io.items():
        actual = found[tensor]
        if len(actual) != len(shape):
            raise BundleError(f"{source}: field 'graphs.{name}.{kind}.{tensor}' has rank {len(shape)}, graph has {actual}")
        for i, (want, got) in enumerate(zip(shape, actual)):
            if isinstance(want, int) and isinstance(got, int) and want != got:
                raise BundleError(f"{source}: field 'graphs.{name}.{kind}.{tensor}' dim {i} is {want}, graph has {got}")


class Bundle:
    """A model bundle on ONNX Runtime: the manifest and one session per graph."""

    def __init__(self, path: str | Path, providers=None, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise BundleError(f"{self.path}: no such bundle directory")
        self.manifest = Manifest.read(self.path)
        source = str(self.path / "manifest.json")
        self._validate_fields(source)
        self.sessions: dict[str, ort.InferenceSession] = {}
        for name, spec in self.manifest.graphs.items():
            file = self.path / spec.file
            if not file.is_file():
                raise BundleError(f"{source}: field 'graphs.{name}.file' names {spec.file}, which is not in the bundle")
            check_graph(name, file, self.manifest.source.get("sha256"), source)
            try:
                session = create_session(str(file), providers, threads)
            except Exception as exc:
                raise BundleError(f"{file}: ONNX Runtime cannot load it ({exc})") from exc
            _check_io(name, "inputs", spec.inputs, session.get_inputs(), source)
            _check_io(name, "outputs", spec.outputs, session.get_outputs(), source)
            self.sessions[name] = session

    def _validate_fields(self, source: str) -> None:
        m = self.manifest
        c, f, p = m.crops, m.feature_size, sum(m.patches)
        expect = {"temporal": {"features": [None, None, c, f]}} if m.stage >= 1 else {}
        if "backbone" in m.graphs:
            if m.graphs["backbone"].outputs.get("features", [None, f])[1:] != [f]:
                raise BundleError(f"{source}: field 'feature_size' says {f} but 'graphs.backbone.outputs.features' is "
                                  f"{m.graphs['backbone'].outputs.get('features')}")
        if m.stage > 1:
            expect["spatial"] = {"crops": [None, c, f], "patches": [None, p, f]}
        for name, inputs in expect.items():
            spec = m.graphs[name]
            for tensor, shape in inputs.items():
                got = spec.inputs.get(tensor)
                if got is None:
                    raise BundleError(f"{source}: field 'graphs.{name}.inputs.{tensor}' is missing")
                for i, (want, have) in enumerate(zip(shape, got)):
                    if want is not None and have != want:
                        field = {c: "crops", f: "feature_size", p: "grids"}.get(want, "shape")
                        raise BundleError(f"{source}: field '{field}' says {want} but 'graphs.{name}.inputs.{tensor}' "
                                          f"dim {i} is {have}")
        for name in m.graphs:
            if name not in EXPECTED_IO:
                raise BundleError(f"{source}: field 'graphs.{name}': unknown graph (known: {', '.join(EXPECTED_IO)})")

    @property
    def providers(self) -> list[str]:
        """Execution providers in use (of the temporal graph, or the backbone of a backbone-only bundle)."""
        return self.sessions["temporal" if "temporal" in self.sessions else "backbone"].get_providers()

    @property
    def has_backbone(self) -> bool:
        return "backbone" in self.sessions

    # `run_options`: an onnxruntime.RunOptions whose `terminate` lets another thread stop a run.
    def fuse(self, crops: np.ndarray, patches: np.ndarray | None, run_options=None) -> np.ndarray:
        """[N, C, F] crops (+ [N, ΣP, F] patches) -> [N, C, F] fused crop features."""
        if self.manifest.stage == 1:
            return np.asarray(crops, dtype=np.float32)
        return self.sessions["spatial"].run(None, {
            "crops": np.ascontiguousarray(crops, dtype=np.float32),
            "patches": np.ascontiguousarray(patches, dtype=np.float32)}, run_options)[0]

    def scores(self, window: np.ndarray, run_options=None) -> np.ndarray:
        """[B, T, C, F] fused snippets -> [B, T] crop-averaged scores."""
        return self.sessions["temporal"].run(
            None, {"features": np.ascontiguousarray(window, dtype=np.float32)}, run_options)[0]

    def backbone(self, clips: np.ndarray, run_options=None) -> np.ndarray:
        """[N, 3, 16, H, W] clips -> [N, F] features."""
        return self.sessions["backbone"].run(
            None, {"clips": np.ascontiguousarray(clips, dtype=np.float32)}, run_options)[0]
