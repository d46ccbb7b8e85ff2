"""Loading a model bundle with ONNX Runtime, and refusing one whose graphs and manifest disagree."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from monitor.model.manifest import (BACKBONE_INPUTS, BACKBONE_OUTPUTS, SPATIAL_INPUTS, SPATIAL_OUTPUTS,
                                    TEMPORAL_AT_INPUTS, TEMPORAL_AT_OUTPUTS, TEMPORAL_INPUTS, TEMPORAL_OUTPUTS,
                                    BundleError, Manifest)
from monitor.model.integrity import check_graph
from monitor.model.providers import GPU_PROVIDERS, create_session, physical_cores, scoring_layout

EXPECTED_IO = {
    "spatial": (SPATIAL_INPUTS, SPATIAL_OUTPUTS),
    "temporal": (TEMPORAL_INPUTS, TEMPORAL_OUTPUTS),
    "temporal_at": (TEMPORAL_AT_INPUTS, TEMPORAL_AT_OUTPUTS),
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


# On a CPU the backbone is run on pieces of a batch of at most this many bytes of input, so
# that a piece's intermediate tensors stay in the processor's caches: every clip's features
# are its own, so pieces give the same features as one call. Measured with the demo backbone
# (4 cameras through the engine, two scoring workers, 8 snippets a batch): 23 snippets/s in
# one call, 26 in pieces of 256 KB, 25-27 at 64 and 128 KB, 24 at 32 KB (one patch clip a
# call: the calls' own cost shows). An I3D clip (2.4 MB) is a piece of its own: a snippet's
# 59 clips a clip a call took 24 s against 27 s in one call (within this host's noise), and
# the process peaked at 1.4 GB against 4.5 GB. GPUs take the batch whole.
CPU_CALL_BYTES = 128 << 10


class Bundle:
    """A model bundle on ONNX Runtime: the manifest and one session per graph."""

    def __init__(self, path: str | Path, providers=None, threads: int | None = None,
                 io_binding: bool | None = None, cpu_rewrite: bool = True, workers: int | None = 1):
        """`io_binding`: run the graphs through ONNX Runtime I/O binding (inputs copied to the
        device once, outputs allocated there); None turns it on where a graph runs on a GPU.
        `cpu_rewrite`: on the CPU provider, run an fp32 backbone with its 3-D convolutions as
        2-D ones (monitor.model.cpu_graph); False runs the graph as it is in the file.
        `workers`: how many runs of its graphs the caller makes at once (the live engine's
        scoring workers), each on `threads`; None: as the live engine runs best here
        (providers.scoring_layout), which may also choose the threads."""
        self.path = Path(path)
        if not self.path.is_dir():
            raise BundleError(f"{self.path}: no such bundle directory")
        self.manifest = Manifest.read(self.path)
        if workers != 1:
            workers, threads = scoring_layout(providers, threads, workers, self.manifest.snippet_bytes())
        self.workers = workers or 1
        self.threads = threads or physical_cores()  # intra-op threads of each run
        source = str(self.path / "manifest.json")
        self._validate_fields(source)
        self.sessions: dict[str, ort.InferenceSession] = {}
        digests = self.manifest.source.get("sha256", {}) if isinstance(self.manifest.source, dict) else {}
        for name, spec in self.manifest.graphs.items():
            file = self.path / spec.file
            if not file.is_file():
                raise BundleError(f"{source}: field 'graphs.{name}.file' names {spec.file}, which is not in the bundle")
            check_graph(name, file, self.manifest.source.get("sha256"), source)
            try:
                session = create_session(str(file), providers, threads, precision=spec.precision,
                                         graph_key=digests.get(spec.file) if isinstance(digests, dict) else None)
            except Exception as exc:
                raise BundleError(f"{file}: ONNX Runtime cannot load it ({exc})") from exc
            _check_io(name, "inputs", spec.inputs, session.get_inputs(), source)
            _check_io(name, "outputs", spec.outputs, session.get_outputs(), source)
            if (name == "backbone" and cpu_rewrite and spec.precision == "fp32"
                    and session.get_providers() == ["CPUExecutionProvider"]):
                session = self._cpu_backbone(file, session, providers, threads)
            self.sessions[name] = session
        if "backbone" in self.sessions:
            wanted = f"tensor({'uint8' if self.manifest.takes_pixels else 'float'})"
            found = self.sessions["backbone"].get_inputs()[0].type
            if found != wanted:
                raise BundleError(f"{source}: field 'backbone_input' says {self.manifest.backbone_input['dtype']} "
                                  f"but the backbone graph's clips are {found}")
        self.io_binding = {name: (_on_gpu(session) if io_binding is None else bool(io_binding))
                           for name, session in self.sessions.items()}

    @staticmethod
    def _cpu_backbone(file: Path, session, providers, threads):
        """The backbone as the CPU provider runs it fastest (monitor.model.cpu_graph), or the
        session as it is when there is nothing to rewrite."""
        import onnx

        from monitor.model.cpu_graph import conv3d_as_conv2d
        model, rewritten = conv3d_as_conv2d(onnx.load(str(file)))
        if not rewritten:
            return session
        return create_session(model.SerializeToString(), providers, threads)

    def _validate_fields(self, source: str) -> None:
        m = self.manifest
        c, f, p = m.crops, m.feature_size, sum(m.patches)
        expect = {"temporal": {"features": [None, None, c, f]}} if m.stage >= 1 else {}
        if "temporal_at" in m.graphs:
            expect["temporal_at"] = {"features": [None, None, c, f]}
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

    @property
    def backbone_on_gpu(self) -> bool:
        """The backbone's session runs on a GPU provider (on the CPU it shares the cores the
        camera readers use, and takes its batches in pieces)."""
        return _on_gpu(self.sessions["backbone"])

    @property
    def precision(self) -> str:
        """The backbone's precision (fp32, int8, fp16), where the bundle's cost lies."""
        graph = self.manifest.graphs.get("backbone") or self.manifest.graphs["temporal"]
        return graph.precision

    def _run(self, name: str, feeds: dict, run_options=None) -> list[np.ndarray]:
        session = self.sessions[name]
        if not self.io_binding[name]:
            return session.run(None, feeds, run_options)
        # I/O binding: each input crosses to the session's device once, as the type it has
        # (uint8 frames stay uint8), and the outputs are written on the device, then fetched.
        device = "cuda" if _on_gpu(session) else "cpu"
        binding = session.io_binding()
        for input_name, value in feeds.items():
            binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
        for output in session.get_outputs():
            binding.bind_output(output.name, device, 0)
        session.run_with_iobinding(binding, run_options)
        return binding.copy_outputs_to_cpu()

    # `run_options`: an onnxruntime.RunOptions whose `terminate` lets another thread stop a run.
    def fuse(self, crops: np.ndarray, patches: np.ndarray | None, run_options=None) -> np.ndarray:
        """[N, C, F] crops (+ [N, ΣP, F] patches) -> [N, C, F] fused crop features."""
        if self.manifest.stage == 1:
            return np.asarray(crops, dtype=np.float32)
        return self._run("spatial", {
            "crops": np.ascontiguousarray(crops, dtype=np.float32),
            "patches": np.ascontiguousarray(patches, dtype=np.float32)}, run_options)[0]

    def scores(self, window: np.ndarray, run_options=None) -> np.ndarray:
        """[B, T, C, F] fused snippets -> [B, T] crop-averaged scores."""
        return self._run(
            "temporal", {"features": np.ascontiguousarray(window, dtype=np.float32)}, run_options)[0]

    @property
    def has_temporal_at(self) -> bool:
        return "temporal_at" in self.sessions

    def scores_at(self, window: np.ndarray, positions, run_options=None) -> np.ndarray:
        """[B, T, C, F] fused snippets, positions [K] in 0..T-1 -> [B, K]: the scores `scores`
        gives at those positions, through the temporal_at graph, which computes only them (a
        bundle exported before it existed computes all T and picks)."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        length = np.shape(window)[1]
        if positions.size and not (0 <= positions.min() and positions.max() < length):
            raise ValueError(f"positions {positions.tolist()} do not all lie in the window of {length}")
        if not self.has_temporal_at:
            return self.scores(window, run_options)[:, positions]
        return self._run("temporal_at", {"features": np.ascontiguousarray(window, dtype=np.float32),
                                         "positions": positions}, run_options)[0]

    @property
    def takes_pixels(self) -> bool:
        """The backbone takes uint8 pixels [N, 16, H, W, 3] BGR rather than float clips."""
        return self.manifest.takes_pixels

    def backbone(self, clips: np.ndarray, run_options=None) -> np.ndarray:
        """Clips -> [N, F] features: uint8 pixels [N, 16, H, W, 3] BGR for a pixel-input graph,
        float clips [N, 3, 16, H, W] RGB in [-1, 1] otherwise. Float clips given to a pixel-input
        graph are turned back into their pixels (exact for clips of the preprocessing path),
        so that tools written for float bundles keep working."""
        clips = np.asarray(clips)
        if self.takes_pixels:
            if clips.dtype != np.uint8:
                clips = float_clips_to_pixels(clips)
            clips = np.ascontiguousarray(clips)
        elif clips.dtype == np.uint8:
            raise ValueError(f"{self.path}: this backbone takes float clips [N, 3, T, H, W], not uint8 pixels")
        else:
            clips = np.ascontiguousarray(clips, dtype=np.float32)
        features = [self._run("backbone", {"clips": piece}, run_options)[0] for piece in self.backbone_pieces(clips)]
        return features[0] if len(features) == 1 else np.concatenate(features)

    def backbone_pieces(self, clips: np.ndarray) -> list[np.ndarray]:
        """The calls `backbone` makes for a batch of clips: on a CPU, views of at most
        CPU_CALL_BYTES each (one clip at least); on a GPU the batch whole."""
        per_call = len(clips)
        if per_call > 1 and not self.backbone_on_gpu:
            per_call = max(1, CPU_CALL_BYTES // clips[0].nbytes)
        return [clips[i:i + per_call] for i in range(0, len(clips), per_call)]


def float_clips_to_pixels(clips: np.ndarray) -> np.ndarray:
    """Float clips [N, 3, T, H, W] RGB in [-1, 1] -> pixels [N, T, H, W, 3] BGR uint8: the
    inverse of the preprocessing's scaling (x * 2 / 255 - 1) and layout."""
    levels = np.rint((np.asarray(clips, np.float32) + 1.0) * 127.5)
    return np.ascontiguousarray(np.clip(levels, 0, 255).astype(np.uint8).transpose(0, 2, 3, 4, 1)[..., ::-1])


def _on_gpu(session: ort.InferenceSession) -> bool:
    """True when the session's first (preferred) provider is a GPU one."""
    return session.get_providers()[0] in GPU_PROVIDERS
