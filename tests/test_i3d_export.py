"""backbone.onnx: ONNX Runtime agrees with PyTorch, and `python -m export --backbone` writes
a bundle whose manifest records the preprocessing, alone or with an SSRL head."""
import json

import numpy as np
import pytest
import torch

from export.__main__ import main as export_main
from export.backbone import export_backbone
from monitor.model.bundle import Bundle
from monitor.model.manifest import BundleError, Manifest
from monitor.video.preprocess import Geometry
from tests.head_helpers import seeded_model
from tests.i3d_helpers import SMALL, make_bundle, small_backbone, small_bundle, torch_features  # noqa: F401
from training.checkpoint import save_checkpoint
from training.i3d import I3DResNet50


def relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


def clips(n, size, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 16, size, size)).astype(np.float32)


def test_onnx_runtime_agrees_with_pytorch_on_crops_and_patches(small_bundle):
    bundle_dir, model = small_bundle
    bundle = Bundle(bundle_dir)
    for n, size in ((1, 32), (10, 32), (7, 16)):  # dynamic batch; crop and patch sizes differ
        x = clips(n, size, seed=n)
        got = bundle.backbone(x)
        assert got.shape == (n, 128) and got.dtype == np.float32
        assert relative_error(got, torch_features(model, x)) < 1e-3


@pytest.mark.slow
def test_published_size_backbone_agrees_with_pytorch(tmp_path):
    model = I3DResNet50().seed_(0)
    spec = export_backbone(model, tmp_path, Geometry(), 2048)
    assert spec.inputs == {"clips": ["clips", 3, 16, 224, 224]} and spec.outputs == {"features": ["clips", 2048]}
    from monitor.model.providers import create_session
    session = create_session(str(tmp_path / spec.file), "cpu")
    x = clips(2, 224)
    got = session.run(None, {"clips": x})[0]
    err = relative_error(got, torch_features(model, x))
    print(f"\nfull-size I3D-R50: ONNX Runtime vs PyTorch max relative error {err:.2e}")
    assert err < 1e-3


def test_backbone_only_bundle_records_its_preprocessing(tmp_path):
    bundle_dir, _ = make_bundle(tmp_path, Geometry.from_dict(SMALL.to_dict(), resize="reference"))
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["stage"] == 0 and manifest["grids"] == [] and manifest["feature_size"] == 128
    assert set(manifest["graphs"]) == {"backbone"}
    assert manifest["graphs"]["backbone"]["inputs"] == {"clips": ["clips", 3, 16, "height", "width"]}
    pre = manifest["preprocessing"]
    assert pre["frame_size"] == [64, 48] and pre["crop_size"] == 32 and pre["patch_size"] == 16
    assert pre["resize"] == "reference" and pre["color"] == "RGB" and pre["scale"] == [-1.0, 1.0]
    assert pre["grids"] == [23, 35, 47] and pre["patch_source"] == "resized_frame"
    bundle = Bundle(bundle_dir)
    assert bundle.has_backbone and bundle.providers[-1] == "CPUExecutionProvider"
    assert Geometry.from_manifest(bundle.manifest) == Geometry.from_dict(SMALL.to_dict(), resize="reference")


def test_backbone_with_a_checkpoint_makes_one_bundle(tmp_path):
    head = seeded_model(3, feature_size=128)
    save_checkpoint(head, tmp_path / "ssrl.pkl")
    weights = tmp_path / "i3d.pth"
    torch.save(small_backbone().state_dict(), weights)
    out = tmp_path / "bundle"
    assert export_main(["--checkpoint", str(tmp_path / "ssrl.pkl"), "--backbone", str(weights), "--out", str(out),
                        "--frame-size", "64", "48", "--crop-size", "32", "--patch-size", "32"]) == 0
    bundle = Bundle(out)
    m = bundle.manifest
    assert m.stage == 3 and set(m.graphs) == {"spatial", "temporal", "temporal_at", "backbone"}
    # Crops and patches share one size here, so the graph's spatial dims are fixed.
    assert m.graphs["backbone"].inputs == {"clips": ["clips", 3, 16, 32, 32]}
    assert Geometry.from_manifest(m).grids == (23, 35) and m.preprocessing["grids"] == [23, 35]
    assert m.source["backbone"] == "i3d.pth" and m.source["checkpoint"] == "ssrl.pkl"
    # The whole chain runs: backbone features of the crops and patches through both heads.
    features = bundle.backbone(clips(10 + 21, 32))
    fused = bundle.fuse(features[None, :10], features[None, 10:])
    assert bundle.scores(fused[None]).shape == (1, 1)


def test_feature_size_mismatch_between_head_and_backbone_is_refused(tmp_path, capsys):
    save_checkpoint(seeded_model(1, feature_size=64), tmp_path / "ssrl.pkl")
    torch.save(small_backbone().state_dict(), tmp_path / "i3d.pth")
    assert export_main(["--checkpoint", str(tmp_path / "ssrl.pkl"), "--backbone", str(tmp_path / "i3d.pth"),
                        "--out", str(tmp_path / "b")]) == 2
    assert "gives 128-d features" in capsys.readouterr().err


def test_bad_backbone_file_is_refused_by_tensor(tmp_path, capsys):
    state = small_backbone().state_dict()
    state["bn1.weight"] = torch.zeros(5)
    torch.save(state, tmp_path / "i3d.pth")
    assert export_main(["--backbone", str(tmp_path / "i3d.pth"), "--out", str(tmp_path / "b")]) == 2
    assert "tensor 'bn1.weight': expected shape [4], found [5]" in capsys.readouterr().err


def test_export_needs_something_to_export(tmp_path, capsys):
    assert export_main(["--out", str(tmp_path / "b")]) == 2
    assert "--checkpoint and/or --backbone" in capsys.readouterr().err


def test_stage_zero_manifest_is_validated(tmp_path):
    bundle_dir, _ = make_bundle(tmp_path)
    good = json.loads((bundle_dir / "manifest.json").read_text())
    cases = [({"graphs": {}}, "graphs.backbone' is missing"),
             ({"grids": [23]}, "stage 0 has 0 grids"),
             ({"graphs": {**good["graphs"], "temporal": good["graphs"]["backbone"]}}, "graphs.temporal' present"),
             ({"feature_size": 64}, "'feature_size' says 64")]
    for change, message in cases:
        (bundle_dir / "manifest.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(BundleError, match=message):
            Bundle(bundle_dir)
    assert Manifest.from_dict(good).stage == 0
