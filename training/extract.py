"""python -m training.extract --model DIR --videos PATH --out DIR [--crops 10|1] [--grids 23 35 47]

Features for your own videos, in the published layout (SPEC §1): for every video under PATH,
`<video>_i3d.npy` [T, crops, F] and `<video>_patch{S}_i3d.npy` [T, r·c, F], computed by the
one preprocessing path (monitor.video.preprocess) and the bundle's backbone on ONNX Runtime.

Beside them, `<video>_i3d.json` records how they were made (resize mode, geometry, frame
counts, the backbone's checksum). It is written last, so its presence marks a finished video:
a rerun skips those whose record matches the current settings, and a long run can be resumed.
A video that cannot be decoded is reported by name and the others carry on; the exit status
is non-zero if any failed. A video shorter than one snippet is reported and skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # our own message names a bad file; keep FFmpeg's quiet

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,  # noqa: E402
                           TimeElapsedColumn, TimeRemainingColumn)

from monitor.errors import add_debug_flag, guarded
from monitor import __version__  # noqa: E402
from monitor.model.bundle import Bundle  # noqa: E402
from monitor.model.manifest import BundleError  # noqa: E402
from monitor.video.sources import VIDEO_SUFFIXES, videos_in  # noqa: E402
from monitor.video.preprocess import (RESIZE_MODES, Geometry, GeometryError, Preprocessor,  # noqa: E402
                                snippet_count)

METADATA_VERSION = 1


class VideoError(Exception):
    """A video that cannot be turned into features; the message says why."""


class ShortVideo(Exception):
    """A video with fewer frames than one snippet."""


@dataclass
class Outcome:
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    short: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def find_videos(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such video file or directory")
    return videos_in(path)


def output_paths(video: Path, root: Path, out: Path, grids) -> dict[str, Path]:
    """Published names, in the video's sub-folder under `out` (so equal names in different
    folders do not collide)."""
    rel = video.relative_to(root).parent if root.is_dir() else Path()
    base = out / rel / video.stem
    paths = {"crops": base.parent / f"{base.name}_i3d.npy", "metadata": base.parent / f"{base.name}_i3d.json"}
    for g in grids:
        paths[f"patch{g}"] = base.parent / f"{base.name}_patch{g}_i3d.npy"
    return paths


def settings(geometry: Geometry, bundle: Bundle) -> dict:
    """What must match for an earlier result to be reused."""
    return {"preprocessing": geometry.to_dict(), "feature_size": bundle.manifest.feature_size,
            "backbone_sha256": bundle.manifest.source.get("sha256", {}).get(bundle.manifest.graphs["backbone"].file)}


def already_done(paths: dict[str, Path], wanted: dict) -> bool:
    try:
        record = json.loads(paths["metadata"].read_text())
    except (OSError, ValueError):
        return False
    return ({k: record.get(k) for k in wanted} == wanted
            and all(p.is_file() for name, p in paths.items() if name != "metadata"))


class Extractor:
    def __init__(self, bundle: Bundle, geometry: Geometry, batch: int = 16, keep_partial: bool = False):
        self.bundle = bundle
        self.geometry = geometry
        self.pre = Preprocessor(geometry)
        self.batch = max(1, batch)
        self.keep_partial = keep_partial
        self.stop_requested = False

    def features(self, clips: np.ndarray) -> np.ndarray:
        """Clips (as the bundle's backbone takes them) -> [N, F], in chunks of at most `batch`."""
        return np.concatenate([self.bundle.backbone(clips[i:i + self.batch]) for i in range(0, len(clips), self.batch)])

    def snippets(self, frames, on_snippet=None) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """BGR frames as decoded (any iterable) -> crop features [T, crops, F] (None when no
        whole snippet came) and patch features per grid [T, r·c, F]."""
        g = self.geometry
        crops, patches, buffer = [], [], []
        for frame in frames:
            buffer.append(frame)
            if len(buffer) == g.snippet_length:
                # The form the backbone takes: uint8 pixels, or float clips for an older bundle.
                c, p = (self.pre.pixels if self.bundle.takes_pixels else self.pre.snippet)(np.stack(buffer))
                buffer.clear()
                crops.append(self.features(c))
                if p is not None:
                    patches.append(self.features(p))
                if on_snippet:
                    on_snippet()
        if not crops:
            return None, []
        per_grid = []
        if patches:
            stacked = np.stack(patches).astype(np.float32)  # [T, ΣP, F]
            edges = np.cumsum([0] + g.patches)
            per_grid = [stacked[:, edges[i]:edges[i + 1]] for i in range(len(g.grids))]
        return np.stack(crops).astype(np.float32), per_grid

    def video(self, path: Path, on_snippet=None) -> tuple[np.ndarray, list[np.ndarray], dict]:
        """-> crop features [T, crops, F], patch features per grid [T, r·c, F], metadata."""
        g = self.geometry
        capture = cv2.VideoCapture(str(path))
        decoded, size = 0, None

        def decode():
            nonlocal decoded, size
            while not self.stop_requested:
                try:
                    ok, frame = capture.read()
                except cv2.error as exc:
                    raise VideoError(f"the decoder failed at frame {decoded} ({exc})") from exc
                if not ok:
                    return
                if size is None:
                    size = frame.shape[1], frame.shape[0]
                elif (frame.shape[1], frame.shape[0]) != size or frame.ndim != 3:
                    raise VideoError(f"frame {decoded} is {frame.shape[1]}x{frame.shape[0]}, earlier ones {size[0]}x{size[1]}")
                decoded += 1
                yield frame

        try:
            if not capture.isOpened():
                raise VideoError("cannot be opened (not a video, an unsupported codec, or a corrupt file)")
            declared = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            crop_features, per_grid = self.snippets(decode(), on_snippet)
        finally:
            capture.release()
        if self.stop_requested:
            raise KeyboardInterrupt
        if decoded == 0:
            raise VideoError("no frame could be decoded (empty, truncated or corrupt file)")
        # A container that declares clearly more frames than decode: cut short by damage.
        if declared - decoded > g.snippet_length and not self.keep_partial:
            raise VideoError(f"decoding stopped after {decoded} of the {declared} frames the file declares "
                             f"(truncated or corrupt; --keep-partial keeps what decodes)")
        if crop_features is None:
            raise ShortVideo(f"only {decoded} frames, fewer than one snippet of {g.snippet_length}")
        assert len(crop_features) == snippet_count(decoded, g.snippet_length)
        info = {"frames": decoded, "frames_declared": declared, "fps": fps,
                "width": size[0], "height": size[1], "snippets": len(crop_features)}
        return crop_features, per_grid, info


def _save_npy(path: Path, array: np.ndarray) -> None:
    # Write then rename, so an interrupted run never leaves a half file under the final name.
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))
    os.replace(tmp, path)


def write_outputs(paths: dict[str, Path], video: Path, crops: np.ndarray, per_grid: list[np.ndarray],
                  grids, info: dict, wanted: dict, model: Path) -> None:
    paths["crops"].parent.mkdir(parents=True, exist_ok=True)
    _save_npy(paths["crops"], crops)
    for g, arr in zip(grids, per_grid):
        _save_npy(paths[f"patch{g}"], arr)
    record = {"metadata_version": METADATA_VERSION, "producer": f"ssrl-monitor {__version__}",
              "video": str(video), "model": str(model), **info, **wanted,
              "resize": wanted["preprocessing"]["resize"],
              "files": {name: p.name for name, p in paths.items() if name != "metadata"},
              "shapes": {"crops": list(crops.shape), **{f"patch{g}": list(a.shape) for g, a in zip(grids, per_grid)}}}
    tmp = paths["metadata"].with_name(paths["metadata"].name + ".part")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, paths["metadata"])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.extract",
                                description="Extract I3D crop and patch features from videos, in the published layout.")
    p.add_argument("--model", type=Path, required=True, help="model bundle with a backbone (python -m export --backbone ...)")
    p.add_argument("--videos", type=Path, required=True, help="a video file, or a folder searched recursively")
    p.add_argument("--out", type=Path, required=True, help="folder for the .npy files (mirrors sub-folders of --videos)")
    p.add_argument("--crops", type=int, choices=[10, 1],
                   help="ten-crop or the centre crop (default: the bundle's, so that its head can score the result)")
    p.add_argument("--grids", type=int, nargs="*",
                   help="patch grids, rows·columns, e.g. 23 35 47; none for crops only (default: the bundle's)")
    p.add_argument("--resize", choices=RESIZE_MODES, default="reference",
                   help="reference (Pillow LANCZOS, as the published features; default) or fast (OpenCV)")
    p.add_argument("--batch", type=int, default=16, help="clips per backbone call")
    p.add_argument("--providers", help="ONNX Runtime providers, e.g. cuda,cpu (default: best available)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: one per core)")
    p.add_argument("--keep-partial", action="store_true",
                   help="keep the decodable part of a video that stops short of its declared length")
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)  # whole lines: error messages stay greppable
    try:
        bundle = Bundle(args.model, providers=args.providers, threads=args.threads)
        if not bundle.has_backbone:
            raise BundleError(f"{args.model}: this bundle has no backbone.onnx; export one with "
                              f"python -m export --backbone I3D.pth")
        chosen = {"crops": args.crops, "grids": None if args.grids is None else tuple(args.grids)}
        geometry = Geometry.from_manifest(bundle.manifest, resize=args.resize,
                                          **{k: v for k, v in chosen.items() if v is not None})
        videos = find_videos(args.videos)
    except (BundleError, GeometryError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    if not videos:
        console.print(f"[red]error:[/] {args.videos}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
        return 2

    extractor = Extractor(bundle, geometry, batch=args.batch, keep_partial=args.keep_partial)
    previous = {}

    def request_stop(signum, frame):
        extractor.stop_requested = True
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, request_stop)

    wanted = settings(geometry, bundle)
    outcome = Outcome()
    started = time.perf_counter()
    interrupted = False
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            overall = progress.add_task("videos", total=len(videos))
            for video in videos:
                name = str(video.relative_to(args.videos)) if args.videos.is_dir() else video.name
                paths = output_paths(video, args.videos, args.out, geometry.grids)
                if already_done(paths, wanted):
                    outcome.skipped.append(name)
                    progress.advance(overall)
                    continue
                capture = cv2.VideoCapture(str(video))
                expected = snippet_count(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), geometry.snippet_length)
                capture.release()
                task = progress.add_task(f"  {name}", total=expected or None)
                try:
                    crops, per_grid, info = extractor.video(video, lambda: progress.advance(task))
                    write_outputs(paths, video, crops, per_grid, geometry.grids, info, wanted, args.model)
                    outcome.extracted.append(name)
                except VideoError as exc:
                    outcome.failed.append((name, str(exc)))
                    progress.console.print(f"[red]failed:[/] {video}: {exc}")
                except ShortVideo as exc:
                    outcome.short.append(name)
                    progress.console.print(f"[yellow]short:[/] {video}: {exc}; no features written")
                finally:
                    progress.remove_task(task)
                progress.advance(overall)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    elapsed = time.perf_counter() - started
    console.print(f"extracted {len(outcome.extracted)}, already done {len(outcome.skipped)}, "
                  f"too short {len(outcome.short)}, failed {len(outcome.failed)} "
                  f"of {len(videos)} videos in {elapsed:.1f} s (resize: {geometry.resize})")
    for name, why in outcome.failed:
        console.print(f"  [red]failed:[/] {name}: {why}")
    if interrupted:
        console.print("[yellow]interrupted:[/] finished videos are saved; run again to resume")
        return 130
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(guarded(main))
