"""`run_monitor.py bench` and what it relies on: every key of its JSON with a sane value (speed
itself is never asserted), the pixel-input backbone against the float one on real footage,
the CPU graph rewrite against the graph as exported, the FLOP count of a graph worked out by
hand, and older float bundles running live as before."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
import pytest

from export.__main__ import main as export_main
from export.pixel_input import upgrade_bundle
from monitor.capacity.context import VIDEOS, Bench
from monitor.capacity.flops import graph_flops
from monitor.capacity.threads import cpu_by_role, since
from monitor.config import DEMO_BUNDLE
from monitor.model.bundle import Bundle
from monitor.model.cpu_graph import conv3d_as_conv2d
from monitor.model.manifest import Manifest
from monitor.video.preprocess import Geometry, Preprocessor, pixels_to_clips
from tests.factories import DARK, build_bundle, dark_bright_dark, write_video
from tests.i3d_helpers import SMALL, make_bundle, read_frames, sample_video
from tests.live_helpers import ROOT, file_scores

NUMBER = (int, float)
# key -> (type, lowest, highest); None: no bound that side.
KEYS = {
    "machine_peak_gflops": (NUMBER, 0.1, None), "backbone_clips_per_s": (NUMBER, 0.0, None),
    "backbone_gflops": (NUMBER, 0.0, None), "backbone_fraction_of_peak": (NUMBER, 0.0, 2.0),
    "backbone_ort_vs_torch": (NUMBER, 0.0, None), "torch_agreement": (NUMBER, 0.0, 1e-3),
    "head_incremental_ms": (NUMBER, 0.0, None), "head_full_window_ms": (NUMBER, 0.0, None),
    "head_incremental_speedup": (NUMBER, 0.0, None), "head_temporal_ms": (NUMBER, 0.0, None),
    "head_temporal_at_ms": (NUMBER, 0.0, None), "preprocess_ms_per_snippet": (NUMBER, 0.0, None),
    "preprocess_fraction": (NUMBER, 0.0, 1.0), "host_bytes_per_snippet": (int, 1, None),
    "engine_snippets_per_s": (NUMBER, 0.0, None), "inference_bound_snippets_per_s": (NUMBER, 0.0, None),
    "engine_efficiency": (NUMBER, 0.0, 3.0), "latency_ms_p50": (NUMBER, 0.0, None),
    "latency_ms_p99": (NUMBER, 0.0, None), "peak_rss_mb": (NUMBER, 10.0, None),
    "cameras_at_25fps": (int, 0, None), "engine_cpu_ms_per_snippet": (NUMBER, 0.0, None),
    "inference_cpu_ms_per_snippet": (NUMBER, 0.0, None), "engine_efficiency_cpu": (NUMBER, 0.0, 3.0),
    "cameras_per_core_by_cpu": (NUMBER, 0.0, None), "stage": (int, 1, 4), "crops": (int, 1, 10),
    "patches": (int, 0, None), "threads": (int, 1, None), "decode_ms_per_frame": (NUMBER, 0.0, None),
    "video_fps": (NUMBER, 1.0, None), "reader_cpu_ms_per_snippet": (NUMBER, 0.0, None),
    "worker_cpu_ms_per_snippet": (NUMBER, 0.0, None), "engine_efficiency_ceiling": (NUMBER, 0.0, 1.0),
    "engine_efficiency_net": (NUMBER, 0.0, None),
}


def bench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_bench_json_has_every_key_with_a_sane_value(tmp_path):
    done = bench("--json", "--seconds", "2", "--cameras", "2", "--work", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    for key, (kind, low, high) in KEYS.items():
        assert key in result, f"{key} missing"
        value = result[key]
        assert isinstance(value, kind) and not isinstance(value, bool), f"{key} = {value!r}"
        assert low is None or value >= low, f"{key} = {value} < {low}"
        assert high is None or value <= high, f"{key} = {value} > {high}"
    assert result["model"] == str(DEMO_BUNDLE) and result["provider"] == "CPUExecutionProvider"
    assert (result["stage"], result["crops"], result["patches"]) == (4, 1, 49)
    assert result["latency_ms_p99"] >= result["latency_ms_p50"]
    assert result["engine_snippets_per_s"] > 0 and result["inference_bound_snippets_per_s"] > 0
    # The demo's snippet is one 96 x 96 crop and 49 patches of 24 x 24, 16 frames, uint8 pixels.
    assert result["host_bytes_per_snippet"] == 16 * 3 * (96 * 96 + 49 * 24 * 24)
    assert result["backbone_input"] == "uint8 NTHWC BGR"
    # The graph's own FLOP count: 0.344 GFLOP for the crop, 1.055 for the patches.
    assert abs(result["backbone_gflop_per_snippet"] - 1.399) < 0.01
    # OpenCV names the mp4v codec FMP4.
    assert (result["video"], result["video_size"], result["video_codec"]) == ("synthetic", [320, 240], "FMP4")
    assert sorted((tmp_path).glob("camera*-320x240.mp4")), "the 320 x 240 test videos were written there"


@pytest.mark.slow
def test_bench_plays_a_recording_it_is_given_and_says_what_it_is(tmp_path):
    # A site's own recording (here 200 x 150 MJPEG at 10 fps): the cameras play it, paced at 25 fps.
    video = write_video(tmp_path / "site.avi", [(16 * 6, DARK), (16 * 3, 200), (16 * 6, DARK)], size=(200, 150), fps=10)
    work = tmp_path / "work"
    done = bench("--json", "--seconds", "1", "--cameras", "1", "--video", str(video), "--work", str(work))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert (result["video"], result["video_size"], result["video_codec"], result["video_fps"]) == \
        (str(video), [200, 150], "MJPG", 10.0)
    assert result["decode_ms_per_frame"] > 0 and result["engine_snippets_per_s"] > 0
    assert isinstance(result["cameras_at_25fps"], int) and result["cameras_tried"]
    assert not list(work.glob("camera*.mp4")), "synthetic videos were made instead"


def test_a_folder_given_to_bench_stands_for_the_recordings_in_it(tmp_path):
    site = tmp_path / "site"
    (site / "yard").mkdir(parents=True)
    write_video(site / "lobby.avi", [(40, DARK)], size=(80, 64))
    write_video(site / "yard" / "gate.avi", [(48, DARK)], size=(96, 64))
    (site / "notes.txt").write_text("not a video")
    held = Bench(DEMO_BUNDLE, tmp_path / "work", recordings=[site]).recordings_held()
    assert [(r.path.name, r.size, r.frames) for r in held] == [("lobby.avi", (80, 64), 40), ("gate.avi", (96, 64), 48)]


def test_synthetic_bench_videos_take_the_size_asked_for(tmp_path):
    bench_ = Bench(DEMO_BUNDLE, tmp_path, video_size=(64, 48))
    held = bench_.recordings_held()
    assert len(held) == VIDEOS and {(r.size, r.codec, r.fps) for r in held} == {((64, 48), "FMP4", 25.0)}
    assert all(r.frames >= 16 * 30 for r in held)
    assert bench_.snippets(2)[1].shape == (16, 48, 64, 3)


def test_bench_refuses_bad_flags_in_one_line(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "empty").mkdir()
    short = write_video(tmp_path / "short.avi", [(20, DARK)])
    for args, text in ((["--cameras", "0"], "--cameras 0"), (["--seconds", "-1"], "--seconds -1"),
                       (["--model", str(tmp_path / "none")], "no such bundle directory"),
                       (["--video", str(tmp_path / "none.mp4")], f"--video {tmp_path / 'none.mp4'}: no such file"),
                       (["--video", str(tmp_path / "notes.mp4")], "notes.mp4: OpenCV cannot decode a frame of it"),
                       (["--video", str(short)], "short.avi: 20 frames, fewer than two 16-frame snippets"),
                       (["--video", str(tmp_path / "empty")], "empty: no video files in this folder"),
                       (["--video-size", "1920"], "--video-size 1920: give WIDTHxHEIGHT"),
                       (["--video-size", "64x48", "--video", str(short)], "--video-size: only for the synthetic")):
        done = bench(*args, timeout=120)
        assert done.returncode == 2 and text in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- graphs

def test_pixel_input_backbone_gives_the_float_features_on_real_footage(tmp_path):
    frames = read_frames(sample_video("vtest.avi", tmp_path), limit=32)
    float_dir, _ = make_bundle(tmp_path, SMALL)               # a small I3D, float input
    pixel_dir = tmp_path / "pixels"
    assert export_main(["--bundle", str(float_dir), "--uint8-input", "--out", str(pixel_dir)]) == 0
    m = Manifest.read(pixel_dir)
    assert m.takes_pixels and m.backbone_input == {"dtype": "uint8", "layout": "NTHWC", "channels": "BGR"}
    assert m.graphs["backbone"].inputs == {"clips": ["clips", 16, "height", "width", 3]}
    floats, pixels = Bundle(float_dir, cpu_rewrite=False), Bundle(pixel_dir, cpu_rewrite=False)
    assert not floats.takes_pixels and pixels.takes_pixels
    pre = Preprocessor(Geometry.from_manifest(m))
    for t in range(2):
        crops, patches = pre.pixels(frames[16 * t:16 * t + 16])
        for clips in (crops, patches):
            want = floats.backbone(pixels_to_clips(clips))
            got = pixels.backbone(clips)
            assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
            # Float clips handed to a pixel bundle are turned back into exactly their pixels.
            np.testing.assert_allclose(pixels.backbone(pixels_to_clips(clips)), got, rtol=0, atol=1e-6)


def test_the_float_path_is_the_pixel_path_scaled(tmp_path):
    frames = read_frames(sample_video("vtest.avi", tmp_path), limit=16)
    pre = Preprocessor(Geometry(grids=(23, 35, 47)))
    crops, patches = pre.pixels(frames)
    assert crops.dtype == np.uint8 and crops.shape == (10, 16, 224, 224, 3) and patches.shape == (49, 16, 224, 224, 3)
    float_crops, float_patches = pre.snippet(frames)
    np.testing.assert_array_equal(float_crops, pixels_to_clips(crops))
    np.testing.assert_array_equal(float_patches, pixels_to_clips(patches))
    # BGR pixels, RGB clips: plane 0 of a clip is the last channel of its pixels.
    np.testing.assert_array_equal(float_crops[3, 0], (crops[3, ..., 2].astype(np.float64) * 2 / 255 - 1).astype(np.float32))


def test_upgrading_refuses_a_pixel_bundle_and_a_used_directory(tmp_path, capsys):
    pixel_dir = tmp_path / "demo"
    upgrade_bundle(build_bundle(tmp_path / "float"), pixel_dir)
    assert export_main(["--bundle", str(pixel_dir), "--uint8-input", "--out", str(tmp_path / "again")]) == 2
    assert "takes pixels already" in capsys.readouterr().err
    assert export_main(["--bundle", str(tmp_path / "float"), "--uint8-input", "--out", str(pixel_dir)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert export_main(["--bundle", str(tmp_path / "nothing"), "--uint8-input", "--out", str(tmp_path / "x")]) == 2
    assert "no such bundle directory" in capsys.readouterr().err


def test_shipped_demo_bundle_takes_pixels_and_its_checksum_holds():
    m = Manifest.read(DEMO_BUNDLE)
    assert m.takes_pixels
    from monitor.model.integrity import sha256
    assert m.source["sha256"]["backbone.onnx"] == sha256(DEMO_BUNDLE / "backbone.onnx")


@pytest.mark.parametrize("which", ["demo", "i3d"])
def test_cpu_rewrite_computes_the_graph_as_exported(tmp_path, which):
    if which == "demo":
        path, shapes = DEMO_BUNDLE / "backbone.onnx", [(3, 16, 96, 96, 3), (49, 16, 24, 24, 3)]
        model = onnx.load(str(path))
    else:  # I3D's own kernels are factorised (left alone): a 3 x 3 x 3 layer added to its trunk
        model = with_a_cubic_layer(onnx.load(str(make_bundle(tmp_path, SMALL)[0] / "backbone.onnx")))
        shapes = [(2, 3, 16, 32, 32), (5, 3, 16, 16, 16)]
    rewritten, count = conv3d_as_conv2d(model)
    assert count == (3 if which == "demo" else 1)
    onnx.checker.check_model(rewritten)
    import onnxruntime as ort
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    fast = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in shapes:
        x = rng.integers(0, 256, shape, dtype=np.uint8) if which == "demo" else \
            rng.uniform(-1, 1, shape).astype(np.float32)
        want, got = plain.run(None, {"clips": x})[0], fast.run(None, {"clips": x})[0]
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-4, shape
    # The bundle loads it on the CPU provider, and only there.
    bundle = Bundle(DEMO_BUNDLE, providers=["cpu"])
    assert bundle.sessions["backbone"].get_inputs()[0].type == "tensor(uint8)"


def with_a_cubic_layer(model: onnx.ModelProto) -> onnx.ModelProto:
    """A 3 x 3 x 3 Conv (same channels in and out) inserted after the first 3-D Conv that
    gives a multiple of 8 channels."""
    from onnx import helper, numpy_helper
    weights = {t.name: t for t in model.graph.initializer}
    nodes = list(model.graph.node)
    for i, node in enumerate(nodes):
        w = weights.get(node.input[1]) if node.op_type == "Conv" else None
        if w is not None and len(w.dims) == 5 and w.dims[0] % 8 == 0:
            c = w.dims[0]
            cube = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.05, (c, c, 3, 3, 3)).astype(np.float32),
                                           "cube_w")
            out = node.output[0]
            node.output[0] = out + "_before_cube"
            nodes.insert(i + 1, helper.make_node("Conv", [out + "_before_cube", "cube_w"], [out], kernel_shape=[3, 3, 3],
                                                 pads=[1] * 6))
            model.graph.initializer.append(cube)
            del model.graph.node[:]
            model.graph.node.extend(nodes)
            return model
    raise AssertionError("no Conv to follow")


def test_flops_are_counted_from_the_graph():
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((8, 5), np.float32), "m")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3, 3], pads=[1] * 6, strides=[1, 2, 2]),
         helper.make_node("ReduceMean", ["c"], ["r"], axes=[2, 3, 4], keepdims=0),
         helper.make_node("MatMul", ["r", "m"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, m])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # Conv: [2, 8, 16, 16, 16] outputs x 3 * 27 multiply-adds; MatMul: [2, 5] x 8.
    assert graph_flops(model, [2, 3, 16, 32, 32]) == 2 * (2 * 8 * 16 ** 3 * 81 + 2 * 5 * 8)


def test_thread_cpu_is_counted_to_the_role_the_thread_is_named_for():
    # A busy thread named as a camera reader, an idle one named as a scoring worker: the CPU
    # the first burns shows under "readers", none under "workers". Both are read while alive
    # (an ended thread leaves /proc).
    burnt, release = threading.Event(), threading.Event()

    def busy():
        end = time.thread_time() + 0.4
        while time.thread_time() < end:
            sum(range(1000))
        burnt.set()
        release.wait()

    before = cpu_by_role()
    threads = [threading.Thread(target=release.wait, name="engine-0"), threading.Thread(target=busy, name="source-cam0")]
    for thread in threads:
        thread.start()
    burnt.wait(30)
    spent = since(before, cpu_by_role())
    release.set()
    for thread in threads:
        thread.join()
    assert spent is not None, "Linux's per-thread counters are there on this machine"
    assert spent["readers"] >= 0.3, spent
    assert spent["workers"] < 0.05, spent


# ----------------------------------------------------------------------------- live

def test_an_old_float_bundle_runs_live_and_scores_as_its_pixel_upgrade(tmp_path):
    float_dir = build_bundle(tmp_path / "float", stage=4, window=4)
    pixel_dir = tmp_path / "pixels"
    upgrade_bundle(float_dir, pixel_dir)
    video = dark_bright_dark(tmp_path / "v.avi", dark=48, bright=48, after=48)
    old, new = Bundle(float_dir), Bundle(pixel_dir)
    assert not old.takes_pixels and new.takes_pixels
    a, b = file_scores(old, video), file_scores(new, video)
    assert len(a) == len(b) == 9
    assert a[4] > 0.9 > 0.1 > a[0]  # it still tells bright from dark
    np.testing.assert_allclose(a, b, atol=1e-4)
