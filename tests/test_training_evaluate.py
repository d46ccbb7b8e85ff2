"""Frame-level evaluation (SPEC §5) from a checkpoint and from an exported bundle."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export.__main__ import main as export_main
from tests.head_helpers import seeded_model
from tests.training_synthetic import make_feature_set
from training.evaluate import (EvaluationError, evaluate_bundle, evaluate_checkpoint, frame_metrics,
                               frames_from_snippets, main)
from training.checkpoint import save_checkpoint
from tests.torch_threads import one_thread  # noqa: F401  (autouse)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
    """A seeded stage-2 head (F = 64, 10 crops), its checkpoint and bundle, and a feature set."""
    tmp = tmp_path_factory.mktemp("eval")
    data = make_feature_set(tmp / "data", feature_size=64, crops=10, grids=(23,), normal=0, abnormal=0,
                            test_normal=3, test_abnormal=3, length=(5, 30), seed=2)
    model = seeded_model(2, feature_size=64)
    save_checkpoint(model, tmp / "s2.pkl")
    assert export_main(["--checkpoint", str(tmp / "s2.pkl"), "--out", str(tmp / "bundle")]) == 0
    return data, model, tmp / "s2.pkl", tmp / "bundle"


def test_frame_scores_repeat_each_snippet_16_times_and_use_scikit_learn():
    frames = frames_from_snippets([np.array([0.1, 0.9]), np.array([0.5])])
    assert frames.tolist() == [0.1] * 16 + [0.9] * 16 + [0.5] * 16
    gt = np.array([0] * 16 + [1] * 16 + [0] * 16)
    assert frame_metrics(frames, gt) == (1.0, 1.0)
    with pytest.raises(EvaluationError, match="holds 47 frames but the 2 test videos give 48"):
        frame_metrics(frames, gt[:-1], "gt.npy", 2)


def test_checkpoint_and_bundle_agree_with_the_published_whole_video_scoring(stage2):
    data, model, ckpt, bundle = stage2
    from_ckpt = evaluate_checkpoint(ckpt, data.test_list, data.gt)
    from_bundle = evaluate_bundle(bundle, data.test_list, data.gt)
    # The published evaluation by hand: each video whole, [1, crops + patches, T, F], crop mean.
    scores = []
    for name in data.test_list.read_text().split():
        main_ = np.load(data.root / name)
        patches = np.load(data.root / name.replace("_i3d", "_patch23_i3d"))
        x = torch.from_numpy(np.concatenate([main_, patches], axis=1).transpose(1, 0, 2))[None]
        with torch.no_grad():
            scores.append(model(x)[0].numpy())
    frames = np.repeat(np.concatenate(scores), 16)
    np.testing.assert_allclose(from_ckpt.frame_scores, frames, atol=1e-6)
    np.testing.assert_allclose(from_bundle.frame_scores, frames, atol=1e-4)
    assert from_ckpt.frames == len(np.load(data.gt)) and from_ckpt.videos == 6
    assert from_bundle.auc == pytest.approx(from_ckpt.auc, abs=1e-3)
    assert from_bundle.ap == pytest.approx(from_ckpt.ap, abs=1e-3)


def test_command_line(stage2, tmp_path, capsys):
    data, _, ckpt, bundle = stage2
    assert main(["--checkpoint", str(ckpt), "--test-list", str(data.test_list), "--gt", str(data.gt), "--json",
                 "--scores-out", str(tmp_path / "frames.npy")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"auc", "ap", "frames", "videos"} and result["videos"] == 6
    assert np.load(tmp_path / "frames.npy").shape == (result["frames"],)
    # A real subprocess, the bundle path, features elsewhere than the list.
    out = subprocess.run([sys.executable, "-m", "training.evaluate", "--bundle", str(bundle), "--features-dir",
                          str(data.root), "--test-list", str(data.test_list), "--gt", str(data.gt)],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("frame AUC ") and "6 videos" in out.stdout


def test_frame_count_mismatch_and_bad_inputs_are_errors(stage2, tmp_path, capsys):
    data, _, ckpt, _ = stage2
    gt = np.load(data.gt)
    np.save(tmp_path / "short.npy", gt[:-16])
    assert main(["--checkpoint", str(ckpt), "--test-list", str(data.test_list), "--gt", str(tmp_path / "short.npy")]) == 2
    err = capsys.readouterr().err
    assert f"short.npy: holds {len(gt) - 16} frames but the 6 test videos give {len(gt)}" in err
    np.save(tmp_path / "flat.npy", np.zeros(len(gt)))
    with pytest.raises(EvaluationError, match="flat.npy: every frame has label 0"):
        evaluate_checkpoint(ckpt, data.test_list, tmp_path / "flat.npy")
    lst = tmp_path / "t.list"
    lst.write_text(data.test_list.read_text() + "missing_i3d.npy\n")
    assert main(["--checkpoint", str(ckpt), "--features-dir", str(data.root), "--test-list", str(lst),
                 "--gt", str(data.gt)]) == 2
    assert "missing_i3d.npy: no such feature file" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "none.pkl"), "--test-list", str(lst), "--gt", str(data.gt)]) == 2
    assert "none.pkl: no such checkpoint file" in capsys.readouterr().err
