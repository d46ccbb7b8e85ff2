"""Frame-level evaluation (SPEC §5): score every test video whole, repeat each snippet score
over its 16 frames, concatenate in list order, and compare with the frame ground truth
(ROC AUC, and average precision, with scikit-learn). A frame-count mismatch is an error.

    python -m training.evaluate --checkpoint CKPT | --bundle DIR --features-dir DIR
        --test-list LIST --gt GT.npy [--crops 10] [--grids 23 35 47] [--patch-dirs DIR ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monitor.errors import add_debug_flag, guarded
from training.ssrl import PUBLISHED_GRIDS
from training.data import (SNIPPET_FRAMES, FeatureReader, FeatureSetError, FeatureSpec, VideoEntry,
                           check_files, read_list)

SPATIAL_CHUNK = 64   # snippets per patch-branch call: bounds memory; snippets never mix there


class EvaluationError(ValueError):
    """Ground truth and predictions that cannot be compared; the message says why."""


@dataclass
class EvalResult:
    auc: float
    ap: float
    frames: int
    videos: int
    frame_scores: np.ndarray = field(repr=False, default=None)

    def as_dict(self) -> dict:
        return {"auc": self.auc, "ap": self.ap, "frames": self.frames, "videos": self.videos}


def load_gt(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: no such ground-truth file")
    try:
        gt = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise EvaluationError(f"{path}: not a readable .npy array ({exc})") from exc
    if gt.ndim != 1:
        raise EvaluationError(f"{path}: frame ground truth must be 1-D [frames], found {list(gt.shape)}")
    if not np.isin(gt, (0, 1)).all():
        raise EvaluationError(f"{path}: frame labels must be 0 or 1")
    if gt.min() == gt.max():
        raise EvaluationError(f"{path}: every frame has label {int(gt[0])}; AUC needs both normal and abnormal frames")
    return gt.astype(np.int64)


def frames_from_snippets(snippet_scores: list[np.ndarray]) -> np.ndarray:
    return np.repeat(np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in snippet_scores]),
                     SNIPPET_FRAMES)


def check_frame_count(frames: int, gt: np.ndarray, gt_path, videos: int) -> None:
    if frames != len(gt):
        raise EvaluationError(f"{gt_path}: holds {len(gt)} frames but the {videos} test videos give "
                              f"{frames} ({frames // SNIPPET_FRAMES} snippets × {SNIPPET_FRAMES}); "
                              f"the test list, features and ground truth do not belong together")


def frame_metrics(frame_scores: np.ndarray, gt: np.ndarray, gt_path="ground truth", videos: int = 0) -> tuple[float, float]:
    """-> (ROC AUC, average precision)."""
    from sklearn.metrics import average_precision_score, roc_auc_score
    check_frame_count(len(frame_scores), gt, gt_path, videos)
    return float(roc_auc_score(gt, frame_scores)), float(average_precision_score(gt, frame_scores))


def video_metrics(video_scores, labels) -> tuple[float, float]:
    """Video-level (ROC AUC, average precision): the validation measure, labels per video."""
    from sklearn.metrics import average_precision_score, roc_auc_score
    return float(roc_auc_score(labels, video_scores)), float(average_precision_score(labels, video_scores))


# -- scoring with the PyTorch network ------------------------------------------------------

def score_snippets(model, crops: np.ndarray, patches: np.ndarray | None, device="cpu") -> np.ndarray:
    """One whole video with the network in eval mode: [T, C, F] (+ [T, ΣP, F]) -> [T] scores.
    The patch branch runs in chunks of snippets (it never mixes them), the clip relations
    over all T at once, as the published test does."""
    import torch
    with torch.no_grad():
        c = torch.from_numpy(crops).to(device)
        if patches is not None and model.config.active_grids:
            p = torch.from_numpy(patches).to(device)
            c = torch.cat([model.fuse(c[i:i + SPATIAL_CHUNK], p[i:i + SPATIAL_CHUNK])
                           for i in range(0, len(c), SPATIAL_CHUNK)])
        features = model.clip_features(c.permute(1, 0, 2)[None])        # [1, C, T, F]
        return model.crop_scores(features).mean(dim=1)[0].float().cpu().numpy()


def score_entries(model, reader: FeatureReader, entries: list[VideoEntry], device="cpu",
                  rank: int = 0, world: int = 1) -> dict[int, np.ndarray]:
    """Scores of this process's share of the videos (every world-th from rank), by list index."""
    was_training = model.training
    model.eval()
    try:
        out = {}
        for i in range(rank, len(entries), world):
            try:
                crops, patches = reader.snippets(entries[i].path)
            except FeatureSetError as exc:
                raise FeatureSetError(f"{exc} [{entries[i].source}]") from exc
            out[i] = score_snippets(model, crops, patches, device)
        return out
    finally:
        model.train(was_training)


@dataclass
class TestSet:
    """A test list with its features and frame ground truth, checked to belong together."""
    entries: list[VideoEntry]
    reader: FeatureReader
    gt: np.ndarray
    gt_path: Path

    @classmethod
    def open(cls, reader: FeatureReader, test_list, gt, features_dir=None) -> "TestSet":
        entries = read_list(test_list, features_dir, need_labels=False)
        gt_array = load_gt(gt)
        lengths = check_files(reader, entries, "test", full_length=True)
        check_frame_count(sum(lengths) * SNIPPET_FRAMES, gt_array, gt, len(entries))
        return cls(entries, reader, gt_array, Path(gt))

    def result(self, scores: dict[int, np.ndarray] | list[np.ndarray]) -> EvalResult:
        ordered = [scores[i] for i in range(len(self.entries))]
        frames = frames_from_snippets(ordered)
        auc, ap = frame_metrics(frames, self.gt, self.gt_path, len(self.entries))
        return EvalResult(auc, ap, len(frames), len(self.entries), frames)


def evaluate_model(model, test_set: TestSet, device="cpu") -> EvalResult:
    return test_set.result(score_entries(model, test_set.reader, test_set.entries, device))


def _device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate_checkpoint(checkpoint, test_list, gt, features_dir=None, crops: int = 10, grids=None,
                        patch_dirs=(), stage: int | None = None, device: str = "auto") -> EvalResult:
    """Frame AUC/AP of an SSRL checkpoint (published or ours) on a test list."""
    from training.checkpoint import load_model
    model = load_model(checkpoint, stage=stage, grids=grids, crops=crops)
    dev = _device(device)
    model.to(dev)
    reader = FeatureReader(FeatureSpec.for_model(model.config, patch_dirs=patch_dirs, layout="snippet-major"))
    return evaluate_model(model, TestSet.open(reader, test_list, gt, features_dir), dev)


def evaluate_bundle(bundle_dir, test_list, gt, features_dir=None, patch_dirs=(), providers=None) -> EvalResult:
    """Frame AUC/AP of a model bundle (ONNX Runtime, as the monitor scores) on a test list."""
    from monitor.model.bundle import Bundle
    from monitor.model.offline import score_video
    bundle = Bundle(bundle_dir, providers)
    m = bundle.manifest
    # A packed file may hold all published grids; an earlier stage reads a prefix of them
    # (FeatureSpec falls back to the bundle's own grids when they are not such a prefix).
    spec = FeatureSpec(crops=m.crops, feature_size=m.feature_size, grids=tuple(m.grids),
                       packed_grids=PUBLISHED_GRIDS, patch_dirs=tuple(Path(p) for p in patch_dirs), layout="snippet-major")
    test_set = TestSet.open(FeatureReader(spec), test_list, gt, features_dir)
    scores = []
    for entry in test_set.entries:
        crops, patches = test_set.reader.snippets(entry.path)
        scores.append(score_video(bundle, crops, patches))
    return test_set.result(scores)


# -- command line --------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate",
                                description="Frame-level ROC AUC and AP of an SSRL checkpoint or bundle (SPEC §5).")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="SSRL checkpoint (.pkl state dict, published or ours)")
    model.add_argument("--bundle", type=Path, help="model bundle directory (ONNX graphs + manifest.json)")
    p.add_argument("--features-dir", type=Path, help="directory the test list's names are relative to "
                                                      "(default: the list's own directory)")
    p.add_argument("--test-list", type=Path, required=True, help="one feature file per line, in ground-truth order")
    p.add_argument("--gt", type=Path, required=True, help="frame ground truth .npy [frames] of 0/1")
    p.add_argument("--patch-dirs", type=str, nargs="+", default=[],
                   help="more directories holding <video>_patch{S}_i3d.npy ('{grid}' is replaced by the grid)")
    p.add_argument("--crops", type=int, default=10, help="crops per snippet (checkpoint only; 10 or 1)")
    p.add_argument("--grids", type=int, nargs="+", help="grid set of the checkpoint (default 23 35 47)")
    p.add_argument("--stage", type=int, choices=[1, 2, 3, 4], help="expected stage of the checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (checkpoint only)")
    p.add_argument("--scores-out", type=Path, help="write the frame scores [frames] float32 here")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from training.checkpoint import CheckpointError
    from monitor.model.manifest import BundleError
    try:
        if args.checkpoint is not None:
            result = evaluate_checkpoint(args.checkpoint, args.test_list, args.gt, args.features_dir,
                                         crops=args.crops, grids=args.grids, patch_dirs=args.patch_dirs,
                                         stage=args.stage, device=args.device)
        else:
            result = evaluate_bundle(args.bundle, args.test_list, args.gt, args.features_dir,
                                     patch_dirs=args.patch_dirs)
    except (FeatureSetError, EvaluationError, CheckpointError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.scores_out is not None:
        args.scores_out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.scores_out, result.frame_scores.astype(np.float32))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"frame AUC {result.auc:.4f}   AP {result.ap:.4f}   ({result.videos} videos, {result.frames} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
