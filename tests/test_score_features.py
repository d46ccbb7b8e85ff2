"""`run_monitor.py score-features`, as a user runs it: a real subprocess on real files."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.bundle_writer import write_bundle
from tests.head_helpers import seeded_features, seeded_model, torch_scores

ROOT = Path(__file__).resolve().parents[1]


def score_features(*args):
    return subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "score-features", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def stage3(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage3")
    model = seeded_model(3, feature_size=64)
    write_bundle(tmp / "bundle", model)
    return model, tmp / "bundle"


def test_packed_features(tmp_path, stage3):
    model, bundle = stage3
    packed = seeded_features(model, 30)
    np.save(tmp_path / "video.npy", packed)
    r = score_features("--model", bundle, "--features", tmp_path / "video.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 0, r.stderr
    scores = np.load(tmp_path / "s.npy")
    assert scores.shape == (30,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, torch_scores(model, packed), atol=1e-4, rtol=0)


def test_packed_with_all_published_grids_feeds_an_earlier_stage(tmp_path, stage3):
    model, bundle = stage3
    full = np.abs(np.random.default_rng(5).standard_normal((20, 59, 64))).astype(np.float32)
    np.save(tmp_path / "v.npy", full)
    r = score_features("--model", bundle, "--features", tmp_path / "v.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), torch_scores(model, full[:, :31]), atol=1e-4, rtol=0)


def test_main_file_with_patch_companions(tmp_path, stage3):
    model, bundle = stage3
    packed = seeded_features(model, 25)
    np.save(tmp_path / "01_0015_i3d.npy", packed[:, :10])
    np.save(tmp_path / "01_0015_patch23_i3d.npy", packed[:, 10:16])
    np.save(tmp_path / "01_0015_patch35_i3d.npy", packed[:, 16:31])
    r = score_features("--model", bundle, "--features", tmp_path / "01_0015_i3d.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), torch_scores(model, packed), atol=1e-4, rtol=0)


def test_companion_one_snippet_short_is_padded_like_the_published_loader(tmp_path, stage3):
    model, bundle = stage3
    packed = seeded_features(model, 12)
    np.save(tmp_path / "v_i3d.npy", packed[:, :10])
    np.save(tmp_path / "v_patch23_i3d.npy", packed[:11, 10:16])   # one snippet short: last row repeated
    np.save(tmp_path / "v_patch35_i3d.npy", np.concatenate([packed[:, 16:31], packed[:1, 16:31]]))  # one extra: cut
    r = score_features("--model", bundle, "--features", tmp_path / "v_i3d.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 0, r.stderr
    expected = packed.copy()
    expected[11, 10:16] = packed[10, 10:16]
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), torch_scores(model, expected), atol=1e-4, rtol=0)


def test_missing_companion_names_file_and_shape(tmp_path, stage3):
    model, bundle = stage3
    packed = seeded_features(model, 8)
    np.save(tmp_path / "v_i3d.npy", packed[:, :10])
    np.save(tmp_path / "v_patch23_i3d.npy", packed[:, 10:16])
    r = score_features("--model", bundle, "--features", tmp_path / "v_i3d.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 2
    assert "v_patch35_i3d.npy" in r.stderr and "[8, 15, 64]" in r.stderr
    assert not (tmp_path / "s.npy").exists()


def test_wrong_shapes_name_file_and_expected_shape(tmp_path, stage3):
    _, bundle = stage3
    np.save(tmp_path / "bad.npy", np.zeros((9, 40, 64), np.float32))
    r = score_features("--model", bundle, "--features", tmp_path / "bad.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 2 and "bad.npy" in r.stderr and "[T, 31, 64]" in r.stderr
    np.save(tmp_path / "wide.npy", np.zeros((9, 31, 128), np.float32))
    r = score_features("--model", bundle, "--features", tmp_path / "wide.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 2 and "wide.npy" in r.stderr and "64" in r.stderr
    np.save(tmp_path / "v_i3d.npy", np.zeros((9, 10, 64), np.float32))
    np.save(tmp_path / "v_patch23_i3d.npy", np.zeros((9, 5, 64), np.float32))
    np.save(tmp_path / "v_patch35_i3d.npy", np.zeros((9, 15, 64), np.float32))
    r = score_features("--model", bundle, "--features", tmp_path / "v_i3d.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 2 and "v_patch23_i3d.npy" in r.stderr and "[9, 6, 64]" in r.stderr
    r = score_features("--model", bundle, "--features", tmp_path / "absent.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 2 and "absent.npy" in r.stderr


def test_bad_bundle_is_an_error_not_a_traceback(tmp_path, stage3):
    model, _ = stage3
    np.save(tmp_path / "v.npy", seeded_features(model, 5))
    r = score_features("--model", tmp_path / "nope", "--features", tmp_path / "v.npy", "--out", tmp_path / "s.npy")
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr


def test_gpu_providers_fall_back_quietly_and_report_what_runs(tmp_path, stage3):
    model, bundle = stage3
    np.save(tmp_path / "v.npy", seeded_features(model, 5))
    r = score_features("--model", bundle, "--features", tmp_path / "v.npy", "--out", tmp_path / "s.npy",
                       "--providers", "tensorrt,cuda,cpu")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "EP Error" not in out and "Failed to load library" not in out and "Falling back" not in out
    assert "ExecutionProvider" in r.stderr  # the provider in use is reported
