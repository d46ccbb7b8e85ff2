"""int8 against fp32, when the bundle measured is an int8 bundle (python -m export --bundle
FP32 --int8 --calibration VIDEOS --out INT8) whose fp32 source is still where its manifest
says: the backbone's speed-up on the same inputs in this run, the features' agreement on real
footage (opencv-doc's sample videos), and for a demo bundle (trained on the synthetic camera)
the frame AUC of both on held-out synthetic videos. Also what this CPU has for int8
arithmetic: without VNNI (AVX-512 VNNI or AVX-VNNI), x86 multiplies int8 through 16-bit
intermediates (AVX2's vpmaddubsw) and gains far less over fp32 FMA."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from monitor.capacity.context import Bench
from monitor.model.bundle import Bundle
from monitor.model.integrity import sha256
from monitor.model.manifest import Manifest
from monitor.model.offline import score_video
from monitor.video.preprocess import Geometry, Preprocessor, pixels_to_clips
from monitor.video.sampling import video_snippets

SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")  # Debian's opencv-doc: real camera footage
SAMPLE_SUFFIXES = (".avi", ".mp4")
SNIPPETS_PER_SAMPLE = 6
# training.demo.BENCH_SEEDS and up: seeds of synthetic videos the demo recipe never renders.
HELD_OUT_SEEDS = 900_000_000 + 70_000
HELD_OUT_VIDEOS = 10           # 7 with anomalies, 3 without
HELD_OUT_SECONDS = 32.0
CAMERA = "fps=15&width=320&height=240"  # the demo's synthetic camera (training.demo.CAMERA)

KEYS = {
    "cpu_int8": "what this CPU has for int8 arithmetic (VNNI, AVX-512, AVX2)",
    "int8_fp32_twin": "the fp32 bundle this int8 bundle was made from, compared with it",
    "backbone_int8_speedup": "int8 / fp32 backbone clips per second on the same inputs in this run, by CPU "
                             "seconds per call (steady when other processes share the cores)",
    "backbone_int8_speedup_wall": "the same by wall-clock time (fastest of alternated calls)",
    "int8_feature_cosine": "mean cosine of int8 vs fp32 features over the opencv-doc sample videos' clips",
    "int8_feature_cosine_min": "the lowest cosine of one clip there",
    "int8_frame_auc": "frame AUC of the int8 bundle on held-out synthetic videos (demo bundles)",
    "fp32_frame_auc": "frame AUC of its fp32 twin on the same videos",
    "int8_auc_difference": "int8_frame_auc - fp32_frame_auc",
}


def cpu_int8() -> str:
    """The int8-relevant instruction sets this CPU reports (Linux /proc/cpuinfo)."""
    try:
        flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    names = [("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX-INT8"),
             ("avx512f", "AVX-512"), ("avx2", "AVX2")]
    found = [label for flag, label in names if flag in flags]
    if not any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8")):
        found.append("no VNNI")
    return ", ".join(found) or "none of AVX2, AVX-512, VNNI"


def fp32_twin(bundle: Bundle) -> Path | None:
    """The fp32 bundle an int8 bundle was made from, if it is where the manifest says (relative
    to the int8 bundle) and its backbone is the one that was quantised."""
    spec = bundle.manifest.graphs.get("backbone")
    if spec is None or spec.precision != "int8":
        return None
    where = (bundle.manifest.source.get("converted") or {}).get("from")
    if not isinstance(where, str):
        return None
    twin = (bundle.path / where).resolve()
    try:
        graph = twin / Manifest.read(twin).graphs["backbone"].file
        return twin if sha256(graph) == spec.conversion.get("from_sha256") else None
    except (OSError, ValueError, KeyError):
        return None


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half), as
    sklearn.metrics.roc_auc_score gives it; nan without both classes."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    midranks = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    ranks = midranks[inverse]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def _inputs(bundle: Bundle, pre: Preprocessor, frames: np.ndarray) -> list[np.ndarray]:
    """One snippet's backbone inputs (crops, then patches) in the form the bundle takes."""
    crops, patches = pre.pixels(frames)
    parts = [crops] + ([patches] if patches is not None else [])
    return parts if bundle.takes_pixels else [pixels_to_clips(p) for p in parts]


def feature_agreement(int8: Bundle, fp32: Bundle, videos: list[Path]) -> tuple[float, float] | None:
    pre = Preprocessor(Geometry.from_manifest(fp32.manifest))
    cosines = []
    for video in videos:
        for frames in video_snippets(video, SNIPPETS_PER_SAMPLE, pre.geometry.snippet_length):
            for clips in _inputs(fp32, pre, frames):
                a, b = fp32.backbone(clips).astype(np.float64), int8.backbone(clips).astype(np.float64)
                norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
                cosines.append(np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-30), 1.0))
    if not cosines:
        return None
    all_cosines = np.concatenate(cosines)
    return float(all_cosines.mean()), float(all_cosines.min())


def held_out_urls() -> list[str]:
    rng = np.random.default_rng(HELD_OUT_SEEDS)
    urls = []
    for i in range(HELD_OUT_VIDEOS):
        abnormal = i < HELD_OUT_VIDEOS * 7 // 10
        # the first anomaly early enough to be seen whole, as the demo recipe's test videos
        first = f"&first={rng.uniform(1.0, max(1.5, 0.6 * HELD_OUT_SECONDS - 6.0)):.2f}" if abnormal else ""
        urls.append(f"synthetic://heldout{i}?seed={HELD_OUT_SEEDS + i}&rate={3 if abnormal else 0}{first}"
                    f"&duration={HELD_OUT_SECONDS:g}&{CAMERA}&realtime=0")
    return urls


def frame_aucs(bundles: list[Bundle]) -> list[float]:
    """Frame AUC of each bundle on the held-out synthetic videos, each video scored whole
    (monitor.model.offline), snippet scores given to their 16 frames."""
    from monitor.video.synthetic import SyntheticCamera
    m = bundles[0].manifest
    pre = Preprocessor(Geometry.from_manifest(m))
    length = m.snippet_length
    frame_scores: list[list[np.ndarray]] = [[] for _ in bundles]
    truth = []
    for url in held_out_urls():
        camera = SyntheticCamera.from_url(url)
        features: list[list[tuple]] = [[] for _ in bundles]
        buffer = []
        for frame in camera:
            buffer.append(frame)
            if len(buffer) == length:
                inputs = _inputs(bundles[0], pre, np.stack(buffer))
                buffer = []
                for k, bundle in enumerate(bundles):
                    out = [bundle.backbone(x) for x in inputs]
                    features[k].append((out[0], out[1] if m.stage > 1 else None))
        snippets = len(features[0])
        if not snippets:
            continue
        truth.append(np.asarray(camera.ground_truth)[: snippets * length])
        for k, bundle in enumerate(bundles):
            crops = np.stack([f[0] for f in features[k]])
            patches = np.stack([f[1] for f in features[k]]) if m.stage > 1 else None
            frame_scores[k].append(np.repeat(score_video(bundle, crops, patches), length))
    labels = np.concatenate(truth) > 0
    return [roc_auc(np.concatenate(s), labels) for s in frame_scores]


def speeds(bundles: dict[str, Bundle], inputs: list[np.ndarray], budget_s: float) -> tuple[dict, dict]:
    """Seconds per pass over `inputs` of each bundle's backbone: (fastest wall-clock pass, least
    CPU time of a pass), the bundles' passes alternated for about `budget_s` in all, so that a
    busy moment of the machine weighs on both alike. CPU time (the process's, all its threads)
    counts the work whatever else runs on the cores; ONNX Runtime's threads do not spin here."""
    wall = {name: float("inf") for name in bundles}
    cpu = dict(wall)
    for bundle in bundles.values():
        [bundle.backbone(x) for x in inputs]  # warm-up
    started, rounds = time.perf_counter(), 0
    while rounds < 3 or time.perf_counter() - started < budget_s:
        for name, bundle in bundles.items():
            t, c = time.perf_counter(), time.process_time()
            [bundle.backbone(x) for x in inputs]
            wall[name] = min(wall[name], time.perf_counter() - t)
            cpu[name] = min(cpu[name], time.process_time() - c)
        rounds += 1
    return wall, cpu


def measure(bench: Bench) -> dict:
    out = {key: None for key in KEYS}
    out["cpu_int8"] = cpu_int8()
    int8 = bench.bundle
    twin = fp32_twin(int8)
    if twin is None:
        return out  # an fp32 bundle, or an int8 one whose fp32 source is not at hand
    fp32 = Bundle(twin, providers=bench.providers, threads=bench.threads)
    out["int8_fp32_twin"] = str(twin)
    from monitor.capacity.backbone import calls
    inputs = calls(bench, bench.batch())
    wall, cpu = speeds({"fp32": fp32, "int8": int8}, inputs, budget_s=min(6.0, bench.seconds / 3))
    out["backbone_int8_speedup"] = round(cpu["fp32"] / cpu["int8"], 3)
    out["backbone_int8_speedup_wall"] = round(wall["fp32"] / wall["int8"], 3)
    samples = sorted(p for p in SAMPLES.glob("*") if p.suffix.lower() in SAMPLE_SUFFIXES) if SAMPLES.is_dir() else []
    agreement = feature_agreement(int8, fp32, samples)
    if agreement is not None:
        out["int8_feature_cosine"], out["int8_feature_cosine_min"] = (round(v, 5) for v in agreement)
    if int8.manifest.synthetic_only and int8.manifest.stage >= 1:
        bench.log("bench: int8 against fp32 on held-out synthetic videos ...")
        auc8, auc32 = frame_aucs([int8, fp32])
        out.update(int8_frame_auc=round(auc8, 4), fp32_frame_auc=round(auc32, 4),
                   int8_auc_difference=round(auc8 - auc32, 4))
    return out
