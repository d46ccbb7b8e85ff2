"""int8 and fp16 bundles: `python -m export ... --int8 --calibration VIDEOS` and `--fp16`, for
a fresh export and for an existing bundle (the shipped demo bundle); what the manifest
records; that the monitor loads and scores them close to fp32; and the I/O-binding path of
Bundle, which equals the plain run on the CPU. Small seeded weights, few calibration
snippets of real footage (opencv-doc's vtest.avi); speed is measured by `bench`, never here."""
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from export.bundle_writer import sha256
from export.quantize import cosines
from monitor.capacity import precision
from monitor.capacity.context import Bench
from monitor.config import DEMO_BUNDLE
from monitor.model.bundle import Bundle
from monitor.model.manifest import BundleError, Manifest
from monitor.model.providers import _options
from monitor.video.preprocess import Geometry, Preprocessor
from tests.head_helpers import seeded_model
from tests.i3d_helpers import SMALL, read_frames, sample_video, small_backbone
from training.checkpoint import save_checkpoint

GEOMETRY_FLAGS = ["--frame-size", "64", "48", "--crop-size", "32", "--patch-size", "16"]


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """A directory with one real video to calibrate on (a fixed surveillance camera), and
    frames of the same camera at moments the calibration does not take (its snippets are
    spread over the video: snippets 0, 12, 24, ... of 49), as a site calibrates on its
    cameras' footage."""
    root = tmp_path_factory.mktemp("footage")
    calib = root / "calibration"
    calib.mkdir()
    video = sample_video("vtest.avi", root)
    (calib / "vtest.avi").symlink_to(video)
    test_frames = read_frames(video, limit=16 * 5)[16:]
    return calib, test_frames


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A seeded narrow I3D weight file and a seeded stage-2 head checkpoint for its 128-d features."""
    root = tmp_path_factory.mktemp("weights")
    backbone = root / "i3d_small.pth"
    torch.save(small_backbone(seed=0).state_dict(), backbone)
    checkpoint = root / "stage2.pkl"
    save_checkpoint(seeded_model(2, feature_size=128, crops=10, seed=0), checkpoint)
    return backbone, checkpoint


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory, weights):
    """The same weights exported at fp32, to compare against (tests must not modify it)."""
    return export(tmp_path_factory.mktemp("fp32") / "bundle", weights)


def export(out, weights, *extra):
    backbone, checkpoint = weights
    assert export_main(["--checkpoint", str(checkpoint), "--backbone", str(backbone), "--out", str(out),
                        *GEOMETRY_FLAGS, *extra]) == 0
    return out


def _window_features(bundle: Bundle, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop [T, C, F] and patch [T, ΣP, F] features of the frames' snippets, through the one
    preprocessing path and the bundle's backbone."""
    pre = Preprocessor(Geometry.from_manifest(bundle.manifest))
    crops, patches = [], []
    for start in range(0, len(frames) - 15, 16):
        c, p = pre.snippet(frames[start:start + 16])
        crops.append(bundle.backbone(c))
        patches.append(bundle.backbone(p))
    return np.stack(crops), np.stack(patches)


def snippet_scores(bundle: Bundle, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features of every clip, the scores of the snippets as one window), through the one
    preprocessing path and the bundle's own graphs."""
    crops, patches = _window_features(bundle, frames)
    scores = bundle.scores(bundle.fuse(crops, patches)[None])[0]
    features = np.concatenate([crops.reshape(-1, crops.shape[-1]), patches.reshape(-1, patches.shape[-1])])
    return features, scores


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_export_quantises_the_backbone_records_it_and_scores_close_to_fp32(tmp_path, footage, weights,
                                                                               fp32_bundle):
    calib, test_frames = footage
    fp32 = fp32_bundle
    int8 = export(tmp_path / "int8", weights, "--int8", "--calibration", str(calib), "--calibration-snippets", "4")

    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(int8 / "backbone.onnx")
    assert not {"QuantizeLinear", "DequantizeLinear"} & ops(int8 / "temporal.onnx")  # the heads stay fp32
    manifest = json.loads((int8 / "manifest.json").read_text())
    backbone = manifest["graphs"]["backbone"]
    assert backbone["precision"] == "int8"
    conversion = backbone["conversion"]
    assert conversion["format"] == "QDQ" and conversion["calibration"]["videos"] == ["vtest.avi"]
    assert conversion["calibration"]["snippets"] == 3 and conversion["calibration"]["held_out_snippets"] == 1
    assert conversion["calibration_clips"] == 3 * (10 + 6)  # every crop and patch clip (stage 2: grid 23)
    assert "/conv1/Conv" in conversion["fp32_layers"]  # 3 input channels: slower in int8, kept fp32
    assert conversion["met"] and conversion["feature_cosine_mean"] >= 0.99
    assert conversion["from_sha256"] == sha256(fp32 / "backbone.onnx")
    for graph in ("backbone", "spatial", "temporal"):
        assert manifest["source"]["sha256"][f"{graph}.onnx"] == sha256(int8 / f"{graph}.onnx")
    assert "precision" not in json.loads((fp32 / "manifest.json").read_text())["graphs"]["backbone"]

    # The monitor loads it and scores a video the calibration never saw close to fp32.
    bundle = Bundle(int8)
    assert bundle.precision == "int8" and Bundle(fp32).precision == "fp32"
    f32, s32 = snippet_scores(Bundle(fp32), test_frames)
    f8, s8 = snippet_scores(bundle, test_frames)
    assert cosines(f8, f32).mean() >= 0.99
    assert np.abs(s8 - s32).max() < 0.02


@pytest.fixture(scope="module")
def demo_int8(tmp_path_factory, footage):
    """The shipped demo bundle's int8 version (tests must not modify it)."""
    out = tmp_path_factory.mktemp("demo") / "demo_int8"
    assert export_main(["--bundle", str(DEMO_BUNDLE), "--int8", "--calibration", str(footage[0]),
                        "--calibration-snippets", "4", "--out", str(out)]) == 0
    return out


def test_int8_version_of_the_demo_bundle_works_and_keeps_its_heads(footage, demo_int8):
    _, test_frames = footage
    out = demo_int8
    source, converted = Manifest.read(DEMO_BUNDLE), Manifest.read(out)
    assert converted.graphs["backbone"].precision == "int8"
    assert converted.threshold == source.threshold and converted.min_snippets == source.min_snippets
    assert converted.preprocessing == source.preprocessing
    for graph in ("spatial.onnx", "temporal.onnx"):  # heads copied as they were
        assert converted.source["sha256"][graph] == source.source["sha256"][graph] == sha256(out / graph)
    assert converted.source["sha256"]["backbone.onnx"] == sha256(out / "backbone.onnx") != source.source["sha256"]["backbone.onnx"]
    assert converted.source["converted"]["to"] == "int8"
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(out / "backbone.onnx")
    f32, s32 = snippet_scores(Bundle(DEMO_BUNDLE), test_frames)
    f8, s8 = snippet_scores(Bundle(out), test_frames)
    assert cosines(f8, f32).mean() >= 0.99
    assert np.abs(s8 - s32).max() < 0.05
    # The source bundle is left as it is.
    assert sha256(DEMO_BUNDLE / "backbone.onnx") == source.source["sha256"]["backbone.onnx"]


def test_fp16_export_records_its_score_difference_and_loads(tmp_path, footage, weights, fp32_bundle):
    calib, test_frames = footage
    fp32 = fp32_bundle
    fp16 = export(tmp_path / "fp16", weights, "--fp16", "--calibration", str(calib), "--calibration-snippets", "3")
    manifest = Manifest.read(fp16)
    assert {g.precision for g in manifest.graphs.values()} == {"fp16"}
    measured = manifest.graphs["temporal"].conversion["measured"]
    assert measured["snippets"] == 3 and measured["footage"] == ["vtest.avi"]
    assert 0 <= measured["score_max_abs_diff"] < 1e-2 and measured["feature_cosine_mean"] > 0.999
    model = onnx.load(str(fp16 / "backbone.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    # Inputs and outputs keep their types, so the monitor feeds it as it feeds fp32.
    bundle = Bundle(fp16)
    types = {(name, i.name): i.type for name, s in bundle.sessions.items() for i in s.get_inputs() + s.get_outputs()}
    assert types.pop(("temporal_at", "positions")) == "tensor(int64)"
    assert set(types.values()) == {"tensor(float)"}
    f32, s32 = snippet_scores(Bundle(fp32), test_frames)
    f16, s16 = snippet_scores(bundle, test_frames)
    assert cosines(f16, f32).min() > 0.999 and np.abs(s16 - s32).max() < 1e-2
    # The engine's graph in fp16 gives what the fp16 temporal graph gives, position by position.
    window = bundle.fuse(*_window_features(bundle, test_frames))[None]
    positions = np.arange(window.shape[1])
    assert np.abs(bundle.scores_at(window, positions) - bundle.scores(window)).max() < 1e-3


def test_io_binding_scores_equal_the_plain_run_on_the_cpu(footage):
    _, test_frames = footage
    plain, bound = Bundle(DEMO_BUNDLE, providers="cpu"), Bundle(DEMO_BUNDLE, providers="cpu", io_binding=True)
    assert not any(plain.io_binding.values()) and all(bound.io_binding.values())  # auto: off on the CPU
    f_plain, s_plain = snippet_scores(plain, test_frames)
    f_bound, s_bound = snippet_scores(bound, test_frames)
    assert np.array_equal(f_plain, f_bound) and np.array_equal(s_plain, s_bound)


def test_tensorrt_uses_fp16_for_fp16_bundles_and_a_cache_per_graph_content(monkeypatch, tmp_path):
    monkeypatch.setenv("SSRL_TRT_CACHE", str(tmp_path))
    monkeypatch.delenv("SSRL_FP16", raising=False)
    fp32 = _options("TensorrtExecutionProvider", "fp32", "a" * 64)
    fp16 = _options("TensorrtExecutionProvider", "fp16", "a" * 64)
    other = _options("TensorrtExecutionProvider", "fp32", "b" * 64)
    assert not fp32["trt_fp16_enable"] and fp16["trt_fp16_enable"]
    assert fp32["trt_engine_cache_enable"] and fp32["trt_engine_cache_path"].startswith(str(tmp_path))
    assert len({fp32["trt_engine_cache_path"], fp16["trt_engine_cache_path"], other["trt_engine_cache_path"]}) == 3
    monkeypatch.setenv("SSRL_FP16", "1")
    assert _options("TensorrtExecutionProvider", "fp32", "a" * 64)["trt_fp16_enable"]
    assert _options("CPUExecutionProvider", "fp16", "a" * 64) == {}


@pytest.mark.parametrize("argv, message", [
    (["--bundle", "B", "--out", "O"], "--bundle: say what to convert it to"),
    (["--bundle", "B", "--int8", "--out", "O"], "--int8: give --calibration VIDEO_DIR"),
    (["--bundle", "B", "--int8", "--fp16", "--out", "O"], "--int8 and --fp16: choose one"),
    (["--bundle", "B", "--fp16", "--out", "B"], "must differ from --bundle"),
    (["--bundle", "B", "--fp16", "--calibration", "/no/such/dir", "--out", "O"], "--calibration /no/such/dir: no such"),
])
def test_bad_precision_flags_are_one_line_and_exit_2(argv, message, capsys):
    assert export_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bundles_that_cannot_be_quantised_are_named(tmp_path, capsys, weights):
    empty = tmp_path / "no_videos"
    empty.mkdir()
    assert export_main(["--bundle", str(DEMO_BUNDLE), "--int8", "--calibration", str(empty), "--out",
                        str(tmp_path / "o1")]) == 2
    assert f"{empty}: no video files" in capsys.readouterr().err
    heads = tmp_path / "heads"
    assert export_main(["--checkpoint", str(weights[1]), "--out", str(heads)]) == 0
    assert export_main(["--bundle", str(heads), "--int8", "--calibration", str(empty), "--out", str(tmp_path / "o2")]) == 2
    assert "has no backbone graph (backbone.onnx) to quantise" in capsys.readouterr().err


def test_a_manifest_with_an_unknown_precision_is_refused(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    for f in DEMO_BUNDLE.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    data = json.loads((out / "manifest.json").read_text())
    data["graphs"]["backbone"]["precision"] = "int4"
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"field 'graphs.backbone.precision' = 'int4'"):
        Bundle(out)


def test_io_binding_is_a_checked_model_key():
    from monitor.config import ConfigError, from_dict
    assert from_dict({"model": {"io_binding": True}}).model.io_binding is True
    assert from_dict({}).model.io_binding is None  # auto: on for GPU providers
    with pytest.raises(ConfigError, match=r"m.toml: key 'model.io_binding' = 'yes': must be true or false"):
        from_dict({"model": {"io_binding": "yes"}}, source="m.toml")


def test_roc_auc_is_sklearns_ties_included():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounded: many ties
    assert precision.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(precision.roc_auc(scores, np.zeros(500)))


def test_bench_measures_an_int8_bundle_against_its_fp32_source(tmp_path, monkeypatch, demo_int8):
    # Fewer and shorter held-out videos and sample snippets than a real bench run takes.
    monkeypatch.setattr(precision, "HELD_OUT_VIDEOS", 3)
    monkeypatch.setattr(precision, "HELD_OUT_SECONDS", 16.0)
    monkeypatch.setattr(precision, "SNIPPETS_PER_SAMPLE", 1)
    out = precision.measure(Bench(demo_int8, tmp_path / "work", cameras=1, seconds=3.0))
    assert set(out) == set(precision.KEYS)
    assert Path(out["int8_fp32_twin"]) == DEMO_BUNDLE.resolve()  # found from the manifest, checked by its hash
    assert out["backbone_int8_speedup"] > 0 and out["backbone_int8_speedup_wall"] > 0
    assert out["int8_feature_cosine"] >= 0.98 and out["int8_feature_cosine_min"] <= out["int8_feature_cosine"]
    assert 0.5 < out["fp32_frame_auc"] <= 1 and 0.5 < out["int8_frame_auc"] <= 1
    assert out["int8_auc_difference"] == pytest.approx(out["int8_frame_auc"] - out["fp32_frame_auc"], abs=1e-4)
    assert abs(out["int8_auc_difference"]) < 0.05
    assert "AVX" in out["cpu_int8"] or out["cpu_int8"] == "unknown"


def test_bench_reports_no_int8_figures_for_fp32_bundles_or_a_lost_source(tmp_path, demo_int8):
    assert precision.fp32_twin(Bundle(DEMO_BUNDLE)) is None
    moved = tmp_path / "elsewhere" / "int8"
    shutil.copytree(demo_int8, moved)  # its fp32 source is no longer where the manifest says
    out = precision.measure(Bench(moved, tmp_path / "work", cameras=1, seconds=3.0))
    assert out["cpu_int8"] and all(out[k] is None for k in precision.KEYS if k != "cpu_int8")


def test_fp16_version_of_the_pixel_input_demo_bundle_loads_and_takes_pixels(tmp_path, footage):
    calib, test_frames = footage
    out = tmp_path / "demo_fp16"
    assert Manifest.read(DEMO_BUNDLE).takes_pixels  # its graph scales uint8 frames with a DequantizeLinear
    assert export_main(["--bundle", str(DEMO_BUNDLE), "--fp16", "--calibration", str(calib),
                        "--calibration-snippets", "2", "--out", str(out)]) == 0
    bundle = Bundle(out)
    assert bundle.takes_pixels and bundle.sessions["backbone"].get_inputs()[0].type == "tensor(uint8)"
    f32, s32 = snippet_scores(Bundle(DEMO_BUNDLE), test_frames)
    f16, s16 = snippet_scores(bundle, test_frames)
    assert cosines(f16, f32).min() > 0.999 and np.abs(s16 - s32).max() < 1e-2
