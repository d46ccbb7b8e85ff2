"""Write a model bundle directory: the ONNX graphs, checked, and the manifest that describes them."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

from export.onnx_graphs import export_spatial, export_temporal, export_temporal_at
from monitor import __version__
from monitor.model.integrity import sha256  # the digest the monitor checks at load
from monitor.model.manifest import DEFAULT_THRESHOLD, DEFAULT_WINDOW, SNIPPET_LENGTH, GraphSpec, Manifest
from training.ssrl import SSRL


def head_graphs(model: SSRL, out: Path) -> dict[str, GraphSpec]:
    graphs = {}
    jobs = [("temporal", export_temporal), ("temporal_at", export_temporal_at)]
    if model.config.active_grids:
        jobs.append(("spatial", export_spatial))
    for name, export_fn in jobs:
        path = out / f"{name}.onnx"
        io = export_fn(model, path)
        graphs[name] = GraphSpec(path.name, io["inputs"], io["outputs"])
    return graphs


def write_bundle(out: str | Path, model: SSRL | None = None, *, graphs: dict[str, GraphSpec] | None = None,
                 stage: int | None = None, crops: int | None = None, feature_size: int | None = None,
                 preprocessing: dict | None = None, source: dict | None = None,
                 window: int = DEFAULT_WINDOW, threshold: float = DEFAULT_THRESHOLD,
                 min_snippets: int = 1, training_data: str = "") -> Manifest:
    """Export the head of `model` (if given) into `out`, add any extra `graphs` already written
    there (the backbone), and write manifest.json. `training_data`: what footage the model
    learnt from, in words ("synthetic" for the synthetic camera's only; "" when unknown)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    all_graphs = dict(graphs or {})
    if model is not None:
        model = model.eval()
        all_graphs.update(head_graphs(model, out))
        stage, crops, feature_size = model.config.stage, model.config.crops, model.config.feature_size
        grids = list(model.config.active_grids)
    else:
        grids = []
    manifest = Manifest(
        stage=stage, grids=grids, crops=crops, feature_size=feature_size, graphs=all_graphs,
        snippet_length=SNIPPET_LENGTH, window=window, threshold=threshold, min_snippets=min_snippets,
        preprocessing=preprocessing or {}, training_data=training_data, producer=f"ssrl-monitor {__version__}",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        source={**(source or {}), "sha256": {g.file: sha256(out / g.file) for g in all_graphs.values()}},
    )
    manifest.write(out)
    return manifest
