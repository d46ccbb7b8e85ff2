"""python -m training.extract on real video files: the published layout, equality with a
direct PyTorch computation of the same pipeline, resuming, and bad files reported by name."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor.video.preprocess import Geometry, Preprocessor, snippet_count
from tests.i3d_helpers import (SMALL, read_frames, sample_video, scene, small_bundle,  # noqa: F401 (fixture)
                               torch_features, write_video)
from training.extract import main as extract_main

ROOT = Path(__file__).resolve().parents[1]


def direct(model, frames, geometry):
    """The same pipeline without the extractor: preprocessing, then the PyTorch trunk."""
    pre = Preprocessor(geometry)
    crops, patches = [], []
    for t in range(snippet_count(len(frames), geometry.snippet_length)):
        c, p = pre.snippet(frames[16 * t:16 * t + 16])
        crops.append(torch_features(model, c))
        if p is not None:
            patches.append(torch_features(model, p))
    return np.stack(crops), (np.stack(patches) if patches else None)


def assert_close(got, want, what):
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-3, f"{what}: relative error {err:.2e}"


def test_extraction_equals_direct_pytorch_of_the_same_pipeline(tmp_path, small_bundle):
    bundle, model = small_bundle
    videos = tmp_path / "videos"
    (videos / "cam2").mkdir(parents=True)
    # Real footage (the first 48 frames of opencv-doc's vtest.avi, re-encoded) and a synthetic
    # scene in a sub-folder, 48 and 40 frames: 3 and 2 snippets.
    write_video(videos / "street.avi", read_frames(sample_video("vtest.avi", tmp_path), limit=48))
    write_video(videos / "cam2" / "scene.avi", scene(40))
    out = tmp_path / "features"
    assert extract_main(["--model", str(bundle), "--videos", str(videos), "--out", str(out), "--threads", "1"]) == 0

    reference = Geometry.from_dict(SMALL.to_dict(), resize="reference")  # extraction's default mode
    for rel, snippets in (("street", 3), ("cam2/scene", 2)):
        frames = read_frames(videos / f"{rel}.avi")
        want_crops, want_patches = direct(model, frames, reference)
        crops = np.load(out / f"{rel}_i3d.npy")
        assert crops.shape == (snippets, 10, 128) and crops.dtype == np.float32
        assert_close(crops, want_crops, f"{rel} crops")
        start = 0
        for grid, n in zip((23, 35, 47), (6, 15, 28)):  # each file: its grid's patches, row-major
            patches = np.load(out / f"{rel}_patch{grid}_i3d.npy")
            assert patches.shape == (snippets, n, 128)
            assert_close(patches, want_patches[:, start:start + n], f"{rel} patch{grid}")
            start += n
        meta = json.loads((out / f"{rel}_i3d.json").read_text())
        assert meta["resize"] == "reference" and meta["preprocessing"]["resize"] == "reference"
        assert meta["frames"] == len(frames) and meta["snippets"] == snippets
        assert meta["shapes"]["patch47"] == [snippets, 28, 128]

    # Centre crop only, no grids, fast resize: the other shapes of the same layout.
    single = tmp_path / "single"
    assert extract_main(["--model", str(bundle), "--videos", str(videos / "street.avi"), "--out", str(single),
                         "--crops", "1", "--grids", "--resize", "fast", "--threads", "1"]) == 0
    assert sorted(p.name for p in single.iterdir()) == ["street_i3d.json", "street_i3d.npy"]
    fast_single = Geometry.from_dict(SMALL.to_dict(), resize="fast", crops=1, grids=())
    want, _ = direct(model, read_frames(videos / "street.avi"), fast_single)
    got = np.load(single / "street_i3d.npy")
    assert got.shape == (3, 1, 128)
    assert_close(got, want, "centre crop")


def cosine(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def run_extract(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "training.extract", *map(str, args), "--threads", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_bad_videos_are_reported_by_name_and_the_rest_extract(tmp_path, small_bundle):
    bundle, _ = small_bundle
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(sample_video("Megamind.avi", tmp_path), videos / "Megamind.avi")  # 270 frames, fine
    shutil.copy(sample_video("tree.avi", tmp_path), videos / "tree.avi")  # declares 444 frames, holds 68
    whole = write_video(tmp_path / "whole.avi", scene(80)).read_bytes()
    (videos / "half.avi").write_bytes(whole[: len(whole) // 2])  # cut mid-file: decodes 39 of 80 frames
    (videos / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    (videos / "empty.mp4").write_bytes(b"")
    write_video(videos / "short.avi", scene(10))  # shorter than one snippet
    out = tmp_path / "features"

    first = run_extract("--model", bundle, "--videos", videos, "--out", out)
    assert first.returncode == 1, first.stderr
    log = first.stderr
    for name in ("tree.avi", "half.avi", "garbage.mp4", "empty.mp4"):
        assert f"failed: {name}:" in log, log
    assert "decoding stopped after 68 of the 444 frames" in log
    assert "short:" in log and "short.avi: only 10 frames" in log
    assert "extracted 1, already done 0, too short 1, failed 4 of 6 videos" in log
    assert sorted(p.name for p in out.iterdir()) == [
        "Megamind_i3d.json", "Megamind_i3d.npy", "Megamind_patch23_i3d.npy",
        "Megamind_patch35_i3d.npy", "Megamind_patch47_i3d.npy"]
    reference = np.load(out / "Megamind_i3d.npy")
    assert reference.shape == (snippet_count(270), 10, 128)
    assert np.load(out / "Megamind_patch35_i3d.npy").shape == (16, 15, 128)

    # A second run resumes: the finished video is skipped, the bad ones are reported again.
    stamp = (out / "Megamind_i3d.npy").stat().st_mtime_ns
    again = run_extract("--model", bundle, "--videos", videos, "--out", out)
    assert again.returncode == 1 and "extracted 0, already done 1, too short 1, failed 4" in again.stderr
    assert (out / "Megamind_i3d.npy").stat().st_mtime_ns == stamp

    # --keep-partial keeps what a truncated file decodes: 68 frames of tree.avi, 4 snippets.
    partial = run_extract("--model", bundle, "--videos", videos / "tree.avi", "--out", out, "--keep-partial")
    assert partial.returncode == 0, partial.stderr
    assert np.load(out / "tree_i3d.npy").shape == (4, 10, 128)

    # Other settings (the fast resize) re-extract; the record says which mode made the file.
    fast = run_extract("--model", bundle, "--videos", videos / "Megamind.avi", "--out", out, "--resize", "fast")
    assert fast.returncode == 0 and "extracted 1" in fast.stderr, fast.stderr
    assert json.loads((out / "Megamind_i3d.json").read_text())["resize"] == "fast"
    similarity = cosine(np.load(out / "Megamind_i3d.npy"), reference)
    print(f"\nMegamind.avi, small seeded I3D: fast vs reference crop-feature cosine "
          f"mean {similarity.mean():.4f}, min {similarity.min():.4f}")
    assert similarity.mean() > 0.95


def test_missing_backbone_or_videos_is_a_clear_error(tmp_path, capsys, small_bundle):
    bundle, _ = small_bundle
    assert extract_main(["--model", str(bundle), "--videos", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "nowhere: no such video file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert extract_main(["--model", str(bundle), "--videos", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 2
    assert "no video files" in capsys.readouterr().err
    assert extract_main(["--model", str(tmp_path / "nobundle"), "--videos", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "no such bundle directory" in capsys.readouterr().err


def test_extraction_defaults_to_the_bundles_crops_and_grids(tmp_path):
    # The demo bundle has one centre crop and its own grids: extraction must write what its head
    # scores, and score-features with the same bundle must then take the result as it is.
    bundle = ROOT / "monitor" / "demo_bundle"
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "street.avi", read_frames(sample_video("vtest.avi", tmp_path), limit=32))
    out = tmp_path / "features"
    done = run_extract("--model", bundle, "--videos", tmp_path / "videos", "--out", out, "--resize", "fast")
    assert done.returncode == 0, done.stderr
    assert np.load(out / "street_i3d.npy").shape == (2, 1, 64)
    assert [np.load(out / f"street_patch{g}_i3d.npy").shape[1] for g in (23, 35, 47)] == [6, 15, 28]
    scored = subprocess.run([sys.executable, str(ROOT / "run_monitor.py"), "score-features", "--model", str(bundle),
                             "--features", str(out / "street_i3d.npy"), "--out", str(tmp_path / "s.npy")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    assert np.load(tmp_path / "s.npy").shape == (2,)
    # An explicit flag still wins over the bundle's value.
    done = run_extract("--model", bundle, "--videos", tmp_path / "videos", "--out", tmp_path / "f2",
                       "--resize", "fast", "--grids")
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "f2").glob("*_patch*"))
