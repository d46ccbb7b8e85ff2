"""The ONNX bundle computes what the PyTorch network computes, and says what it holds."""
import json

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from monitor.model.bundle import Bundle
from monitor.model.manifest import BundleError, Manifest
from monitor.model.offline import score_video
from tests.graph_faults import rehash
from tests.head_helpers import seeded_features, seeded_model, torch_scores
from training.checkpoint import save_checkpoint


def export(tmp_path, model, *extra):
    save_checkpoint(model, tmp_path / "ckpt.pkl")
    out = tmp_path / "bundle"
    assert export_main(["--checkpoint", str(tmp_path / "ckpt.pkl"), "--out", str(out),
                        "--crops", str(model.config.crops), *extra]) == 0
    return out


def split(packed, crops):
    return packed[:, :crops], (packed[:, crops:] if packed.shape[1] > crops else None)


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_onnx_runtime_agrees_with_pytorch(tmp_path, stage):
    model = seeded_model(stage, feature_size=64)
    bundle = Bundle(export(tmp_path, model))
    for t in (1, 7, 45):  # dynamic time axis, including a single snippet
        packed = seeded_features(model, t, seed=t)
        got = score_video(bundle, *split(packed, 10))
        assert got.shape == (t,) and got.dtype == np.float32
        np.testing.assert_allclose(got, torch_scores(model, packed), atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 4])
def test_published_size_agrees_with_pytorch(tmp_path, stage):
    model = seeded_model(stage, feature_size=2048)
    bundle = Bundle(export(tmp_path, model))
    packed = seeded_features(model, 24)
    np.testing.assert_allclose(score_video(bundle, *split(packed, 10)), torch_scores(model, packed), atol=1e-4, rtol=0)


def test_spatial_then_temporal_equals_one_piece_forward():
    model = seeded_model(4, feature_size=64)
    packed = torch.from_numpy(seeded_features(model, 12))
    with torch.no_grad():
        # The spatial part snippet by snippet, then the temporal part over the whole video.
        fused = torch.stack([model.fuse(packed[i:i + 1, :10], packed[i:i + 1, 10:])[0] for i in range(12)])
        two_piece = model.crop_scores(model.clip_features(fused.permute(1, 0, 2)[None])).mean(1)[0]
        one_piece = model(packed.permute(1, 0, 2)[None])[0]
    torch.testing.assert_close(two_piece, one_piece, atol=1e-6, rtol=0)


def test_batched_temporal_windows_are_independent(tmp_path):
    model = seeded_model(1, feature_size=64)
    bundle = Bundle(export(tmp_path, model))
    a, b = seeded_features(model, 9, seed=3), seeded_features(model, 9, seed=4)
    both = bundle.scores(np.stack([a, b]))
    np.testing.assert_allclose(both[0], bundle.scores(a[None])[0], atol=1e-6)
    np.testing.assert_allclose(both[1], bundle.scores(b[None])[0], atol=1e-6)


def test_graphs_pass_checker_and_manifest_records_everything(tmp_path):
    model = seeded_model(3, feature_size=64, crops=1)
    out = export(tmp_path, model, "--window", "24", "--threshold", "0.7", "--min-snippets", "2")
    for name in ("spatial.onnx", "temporal.onnx", "temporal_at.onnx"):
        onnx.checker.check_model(str(out / name), full_check=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage"] == 3 and m["grids"] == [23, 35] and m["patches"] == [6, 15]
    assert m["crops"] == 1 and m["feature_size"] == 64 and m["snippet_length"] == 16
    assert m["window"] == 24 and m["threshold"] == 0.7 and m["min_snippets"] == 2
    # Bundles written before the field existed alert on a single snippet.
    m.pop("min_snippets")
    assert Manifest.from_dict(m).min_snippets == 1 and Bundle(out).manifest.min_snippets == 2
    assert m["producer"].startswith("ssrl-monitor ")
    assert m["graphs"]["spatial"]["inputs"] == {"crops": ["snippets", 1, 64], "patches": ["snippets", 21, 64]}
    assert m["graphs"]["temporal"]["inputs"] == {"features": ["batch", "time", 1, 64]}
    assert m["graphs"]["temporal"]["outputs"] == {"scores": ["batch", "time"]}
    assert m["graphs"]["temporal_at"]["inputs"] == {"features": ["batch", "time", 1, 64], "positions": ["positions"]}
    assert m["graphs"]["temporal_at"]["outputs"] == {"scores": ["batch", "positions"]}
    assert set(m["source"]["sha256"]) == {"spatial.onnx", "temporal.onnx", "temporal_at.onnx"}


def test_stage_one_bundle_has_no_spatial_graph(tmp_path):
    out = export(tmp_path, seeded_model(1, feature_size=64))
    assert not (out / "spatial.onnx").exists()
    assert "spatial" not in json.loads((out / "manifest.json").read_text())["graphs"]


def edit_manifest(out, change):
    m = json.loads((out / "manifest.json").read_text())
    change(m)
    (out / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("change, field", [
    (lambda m: m.update(crops=5), "crops"),
    (lambda m: m.update(feature_size=128), "feature_size"),
    (lambda m: m.update(stage=3, grids=[23, 35], patches=[6, 15]), "grids"),
    (lambda m: m.pop("window"), "window"),
    (lambda m: m.update(threshold=1.5), "threshold"),
    (lambda m: m.update(min_snippets=0), "min_snippets"),
    (lambda m: m["graphs"]["temporal"].update(file="absent.onnx"), "graphs.temporal.file"),
    (lambda m: m["graphs"]["spatial"]["inputs"].update(patches=["snippets", 15, 64]), "grids"),
    (lambda m: m["graphs"]["temporal"].update(inputs={"feats": ["batch", "time", 10, 64]}), "graphs.temporal.inputs"),
    (lambda m: m["graphs"].pop("spatial"), "graphs.spatial"),
])
def test_bundle_whose_manifest_and_graphs_disagree_is_refused(tmp_path, change, field):
    out = export(tmp_path, seeded_model(2, feature_size=64))
    edit_manifest(out, change)
    with pytest.raises(BundleError) as err:
        Bundle(out)
    assert f"field '{field}" in str(err.value)


def test_graph_swapped_for_another_models_is_refused(tmp_path):
    out = export(tmp_path, seeded_model(2, feature_size=64))
    other = export(tmp_path / "other", seeded_model(2, feature_size=32))
    (out / "temporal.onnx").write_bytes((other / "temporal.onnx").read_bytes())
    with pytest.raises(BundleError, match="temporal graph's SHA-256"):
        Bundle(out)                      # the manifest's hash sees the swap first
    rehash(out)                          # and with the hash made to match, the shapes still disagree
    with pytest.raises(BundleError, match="graphs.temporal.inputs.features"):
        Bundle(out)


def test_missing_manifest_and_directory_are_named(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        Bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="manifest.json: missing"):
        Bundle(tmp_path / "empty")
