"""Feature sets for training and evaluation, in the published layout (SPEC §1, §4).

A list file names one video per line, relative to a features directory (the published lists
hold bare names such as `01_0014_i3d.npy`); a line may carry its label as `path,label`.
A video's features are either
- snippet-major `<video>_i3d.npy` [T, crops, F] (the published extraction), with the patch
  companions `<video>_patch{S}_i3d.npy` [T, r·c, F] beside it or in a patch directory,
- packed [T, crops + ΣP, F] (the published test-time concatenation), or
- crop-major [crops, 32, F] (how some published training sets are stored), with crop-major
  companions [r·c, 32, F].
Training resamples every video to 32 segments exactly as the published loader does.
A missing or malformed file is an error that names it; nothing is skipped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monitor.model.feature_files import align_snippets, patch_companion
from training.ssrl import SSRLConfig, grid_patches

SEGMENTS = 32
SNIPPET_FRAMES = 16
# Published label presets: the train lists put the abnormal videos first.
LABEL_PRESETS = {"shanghai": 63, "ucf": 810}
LAYOUTS = ("auto", "snippet-major", "crop-major")
_LABEL_WORDS = {"0": 0, "1": 1, "normal": 0, "abnormal": 1, "0.0": 0, "1.0": 1}


class FeatureSetError(ValueError):
    """A list or feature file that cannot be used; the message names it and says why."""


# -- list files ----------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoEntry:
    path: Path              # the main feature file
    label: int | None       # 1 abnormal, 0 normal, None when the list carries no labels
    source: str             # "list:line", for messages

    @property
    def name(self) -> str:
        return self.path.name


def abnormal_count(labels: str, list_path: Path) -> int | None:
    """How many leading lines a preset marks abnormal; None when labels come from the list."""
    if labels in (None, "", "list"):
        return None
    if labels in LABEL_PRESETS:
        return LABEL_PRESETS[labels]
    if str(labels).isdigit():
        return int(labels)
    raise FeatureSetError(f"{list_path}: unknown label preset {labels!r} "
                          f"(use {', '.join(LABEL_PRESETS)}, a number N for 'first N abnormal', or 'list')")


def read_list(list_path: str | Path, features_dir: str | Path | None = None,
              labels: str | None = "list", need_labels: bool = True) -> list[VideoEntry]:
    """Entries of a list file. `labels`: 'shanghai' / 'ucf' / 'N' (the first N lines are
    abnormal, the rest normal) or 'list' (every line is `path,label`)."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FeatureSetError(f"{list_path}: no such list file")
    base = Path(features_dir) if features_dir is not None else list_path.parent
    first_abnormal = abnormal_count(labels, list_path) if need_labels else None
    try:
        lines = list_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FeatureSetError(f"{list_path}: cannot read the list ({exc})") from exc
    entries: list[VideoEntry] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_path}:{number}"
        parts = [p.strip() for p in line.split(",")]
        if len(parts) > 2 or not parts[0]:
            raise FeatureSetError(f"{where}: expected 'path' or 'path,label', found {line!r}")
        label = None
        if len(parts) == 2:
            if parts[1].lower() not in _LABEL_WORDS:
                raise FeatureSetError(f"{where}: label {parts[1]!r} is not 0/1 or normal/abnormal")
            label = _LABEL_WORDS[parts[1].lower()]
        if need_labels:
            if first_abnormal is not None:
                preset = 1 if len(entries) < first_abnormal else 0
                if label is not None and label != preset:
                    raise FeatureSetError(f"{where}: the line says label {label} but preset {labels!r} "
                                          f"makes it {preset}")
                label = preset
            elif label is None:
                raise FeatureSetError(f"{where}: no label; write 'path,label' lines or choose a label "
                                      f"preset ({', '.join(LABEL_PRESETS)}, or N for 'first N abnormal')")
        path = Path(parts[0]).expanduser()
        entries.append(VideoEntry(path if path.is_absolute() else base / path, label, where))
    if not entries:
        raise FeatureSetError(f"{list_path}: the list names no videos")
    if need_labels and first_abnormal is not None and first_abnormal > len(entries):
        raise FeatureSetError(f"{list_path}: preset {labels!r} marks the first {first_abnormal} videos "
                              f"abnormal but the list holds only {len(entries)}")
    return entries


# -- resampling ----------------------------------------------------------------------------

def resample_segments(snippets: np.ndarray, segments: int = SEGMENTS) -> np.ndarray:
    """[T, ...] -> [segments, ...]: boundaries at linspace(0, T, segments + 1) cast to int;
    each segment is the mean of its snippets, or the snippet at its boundary when empty."""
    t = snippets.shape[0]
    bounds = np.linspace(0, t, segments + 1).astype(np.int64)
    out = np.empty((segments,) + snippets.shape[1:], dtype=np.float32)
    for i in range(segments):
        start, stop = bounds[i], bounds[i + 1]
        if stop > start:
            out[i] = np.asarray(snippets[start:stop], dtype=np.float32).mean(axis=0)
        else:
            out[i] = snippets[start]
    return out


# -- reading one video ---------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureSpec:
    """What the model needs from a video's files."""
    crops: int
    feature_size: int
    grids: tuple[int, ...] = ()          # active grids: patch rows the model reads, in order
    packed_grids: tuple[int, ...] = ()   # grids a packed file may hold (the active ones first)
    patch_dirs: tuple[Path, ...] = ()    # where companions may live besides the main file
    layout: str = "auto"
    segments: int = SEGMENTS

    @classmethod
    def for_model(cls, config: SSRLConfig, patch_dirs=(), layout: str = "auto",
                  segments: int = SEGMENTS) -> "FeatureSpec":
        return cls(crops=config.crops, feature_size=config.feature_size, grids=config.active_grids,
                   packed_grids=tuple(config.grids), patch_dirs=tuple(Path(p) for p in patch_dirs),
                   layout=layout, segments=segments)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise FeatureSetError(f"layout {self.layout!r}: use one of {', '.join(LAYOUTS)}")
        if tuple(self.packed_grids[: len(self.grids)]) != tuple(self.grids):
            object.__setattr__(self, "packed_grids", tuple(self.grids))

    def packed_rows(self) -> dict[int, int]:
        """Row counts a main file may have -> how many of its grids it packs (0: crops only)."""
        sizes = [grid_patches(g) for g in self.packed_grids]
        options = {self.crops: 0}
        for n in range(len(self.grids), len(sizes) + 1):
            options.setdefault(self.crops + sum(sizes[:n]), n)
        return options

    def companion_candidates(self, main: Path, grid: int) -> list[Path]:
        name = patch_companion(main, grid).name
        found = [main.with_name(name)]
        for d in self.patch_dirs:
            found.append(Path(str(d).replace("{grid}", str(grid))) / name)
        return found


def _open(path: Path, purpose: str) -> np.ndarray:
    if not path.is_file():
        raise FeatureSetError(f"{path}: no such feature file ({purpose})")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises several kinds for a damaged file
        raise FeatureSetError(f"{path}: not a readable .npy array ({exc})") from exc
    if not np.issubdtype(arr.dtype, np.floating):
        raise FeatureSetError(f"{path}: holds {arr.dtype} values; features must be floating point")
    return arr


@dataclass
class _Layout:
    """How one main file is laid out, found from its header only."""
    crop_major: bool
    packed: int            # grids packed into the main file (0: crops only)
    length: int            # T snippets (snippet-major) or stored segments (crop-major)
    companions: list[tuple[int, Path, bool]] = field(default_factory=list)  # grid, file, crop-major


class FeatureReader:
    """Reads videos for one model: `snippets` (evaluation, all T) and `segments` (training)."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec

    # Shape rules -------------------------------------------------------------------------
    def _orientation(self, path: Path, shape: tuple, rows_ok, what: str) -> bool:
        """True when the array is crop-major [rows, S, F]; False for snippet-major [T, rows, F]."""
        s = self.spec
        if len(shape) != 3 or shape[2] != s.feature_size:
            raise FeatureSetError(f"{path}: expected a 3-D array [T, {what}, {s.feature_size}] or "
                                  f"[{what}, {s.segments}, {s.feature_size}], found {list(shape)}")
        snippet_major = shape[1] in rows_ok and shape[0] >= 1
        crop_major = shape[0] in rows_ok and shape[1] >= 1
        if s.layout == "snippet-major":
            crop_major = False
        elif s.layout == "crop-major":
            snippet_major = False
        else:
            crop_major = crop_major and shape[1] == s.segments
            if snippet_major and crop_major:
                raise FeatureSetError(f"{path}: shape {list(shape)} reads both as [T, rows, F] and as "
                                      f"crop-major [rows, {s.segments}, F]; choose --layout")
        if not (snippet_major or crop_major):
            raise FeatureSetError(f"{path}: expected [T, {what}, {s.feature_size}]"
                                  f"{'' if s.layout == 'snippet-major' else f' or crop-major [{what}, {s.segments}, {s.feature_size}]'}"
                                  f", found {list(shape)}")
        return crop_major

    def inspect(self, path: Path) -> _Layout:
        """Check a video's files from their headers (no data read): shapes and companions."""
        s = self.spec
        main = _open(path, "main features")
        shape = main.shape
        if main.ndim == 2 and s.crops == 1:   # single-crop features stored as [T, F]
            shape = (shape[0], 1, shape[1])
        options = s.packed_rows()
        what = f"{s.crops}" if not s.grids else f"{s.crops} (+ patches)"
        crop_major = self._orientation(path, shape, options, what)
        rows = shape[0] if crop_major else shape[1]
        length = shape[1] if crop_major else shape[0]
        layout = _Layout(crop_major=crop_major, packed=options[rows], length=length)
        if layout.packed == 0:
            for grid in s.grids:
                layout.companions.append(self._find_companion(path, grid, layout))
        return layout

    def _find_companion(self, main: Path, grid: int, layout: _Layout) -> tuple[int, Path, bool]:
        candidates = self.spec.companion_candidates(main, grid)
        comp = next((c for c in candidates if c.is_file()), None)
        p = grid_patches(grid)
        if comp is None:
            tried = ", ".join(str(c) for c in candidates)
            raise FeatureSetError(f"{main}: missing patch companion for grid {grid} "
                                  f"(expected [T, {p}, {self.spec.feature_size}]; looked for {tried})")
        arr = _open(comp, f"grid {grid} patches of {main.name}")
        crop_major = self._orientation(comp, arr.shape, {p}, str(p))
        if crop_major and not layout.crop_major:
            raise FeatureSetError(f"{comp}: crop-major patches [{p}, {arr.shape[1]}, F] beside a snippet-major "
                                  f"main file {main.name} [T, crops, F]; store both the same way")
        return grid, comp, crop_major

    # Reading -----------------------------------------------------------------------------
    def _blocks(self, path: Path, layout: _Layout) -> list[tuple[np.ndarray, Path, bool]]:
        """The video as row blocks (array, file, crop-major?): crops first, then each grid."""
        s = self.spec
        main = np.load(path, mmap_mode="r", allow_pickle=False)
        if main.ndim == 2:
            main = main[:, None, :]
        if layout.crop_major:
            main = main.transpose(1, 0, 2)   # a view: [S, rows, F]
        blocks = [(main[:, : s.crops], path, layout.crop_major)]
        if layout.packed:
            start = s.crops
            for g in s.grids:
                blocks.append((main[:, start: start + grid_patches(g)], path, layout.crop_major))
                start += grid_patches(g)
        for _, comp, crop_major in layout.companions:
            arr = np.load(comp, mmap_mode="r", allow_pickle=False)
            blocks.append((arr.transpose(1, 0, 2) if crop_major else arr, comp, crop_major))
        return blocks   # every array is [time, rows, F] now

    def snippets(self, path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
        """Every snippet of a video: crops [T, C, F] and patches [T, ΣP, F] (None without grids)."""
        path = Path(path)
        layout = self.inspect(path)
        if layout.crop_major:
            raise FeatureSetError(f"{path}: holds crop-major segments [{self.spec.crops}, {layout.length}, F], "
                                  f"a training layout; scoring frames needs every snippet [T, crops, F]")
        blocks = self._blocks(path, layout)
        t = blocks[0][0].shape[0]
        crops = _finite(path, np.array(blocks[0][0], dtype=np.float32))   # a copy: mmaps are read-only
        if not self.spec.grids:
            return crops, None
        patches = [_finite(src, np.asarray(align_snippets(arr, t), dtype=np.float32)) for arr, src, _ in blocks[1:]]
        return crops, np.ascontiguousarray(np.concatenate(patches, axis=1))

    def segments(self, path: str | Path) -> np.ndarray:
        """The training view of a video: [C + ΣP, segments, F] float32."""
        path = Path(path)
        layout = self.inspect(path)
        blocks = self._blocks(path, layout)
        s = self.spec
        t = blocks[0][0].shape[0]
        parts = []
        for i, (arr, src, crop_major) in enumerate(blocks):
            if crop_major and arr.shape[0] == s.segments:
                part = np.asarray(arr, dtype=np.float32)     # stored as segments already
            else:
                # As the published loader: patches aligned to the main file's T, then every row
                # resampled (row by row, so each block is resampled on its own, without a copy
                # of the whole video).
                part = resample_segments(align_snippets(arr, t) if i and not layout.crop_major else arr, s.segments)
            parts.append(_finite(src, part))
        return np.ascontiguousarray(np.concatenate(parts, axis=1).transpose(1, 0, 2))

    def snippet_count(self, path: str | Path) -> int:
        layout = self.inspect(Path(path))
        if layout.crop_major:
            raise FeatureSetError(f"{path}: holds crop-major segments, a training layout; "
                                  f"scoring frames needs every snippet [T, crops, F]")
        return layout.length


def _finite(path: Path, arr: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise FeatureSetError(f"{path}: holds NaN or infinite values")
    return arr


def check_files(reader: FeatureReader, entries: list[VideoEntry], purpose: str,
                full_length: bool = False) -> list[int]:
    """Open every video's files by header before a run starts, so that a bad file stops the
    run at once and not hours later. Returns each video's stored length."""
    problems, lengths = [], []
    for entry in entries:
        try:
            lengths.append(reader.snippet_count(entry.path) if full_length else reader.inspect(entry.path).length)
        except FeatureSetError as exc:
            problems.append(f"{exc} [{entry.source}]")
            lengths.append(0)
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise FeatureSetError(f"{len(problems)} bad {purpose} video(s):\n  " + "\n  ".join(problems[:10]) + more)
    return lengths


def feature_size_of(path: str | Path) -> int:
    """The F of a main feature file, read from its header (to size a model from its data)."""
    return int(_open(Path(path), "main features").shape[-1])


# -- training sampling ---------------------------------------------------------------------

class VideoPool:
    """Videos of one label, read as [rows, segments, F]; optionally kept in memory."""

    def __init__(self, reader: FeatureReader, entries: list[VideoEntry], cache: bool = False):
        self.reader, self.entries, self.cache = reader, list(entries), {} if cache else None

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> np.ndarray:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        try:
            video = self.reader.segments(self.entries[i].path)
        except FeatureSetError as exc:
            raise FeatureSetError(f"{exc} [{self.entries[i].source}]") from exc
        if self.cache is not None:
            self.cache[i] = video
        return video


class ShardedOrder:
    """Which videos of a pool a process draws at a step: a fresh seeded permutation per pass,
    split across processes like a distributed sampler, in batches that drop the remainder.
    A pure function of (seed, step), so resuming at step s draws what an uninterrupted run would."""

    def __init__(self, size: int, batch: int, seed: int, salt: int, rank: int = 0, world: int = 1):
        self.size, self.batch, self.seed, self.salt, self.rank, self.world = size, batch, seed, salt, rank, world
        self.per_rank = -(-size // world)
        self.batches = self.per_rank // batch
        if self.batches < 1:
            raise FeatureSetError(f"{size} videos cannot fill a batch of {batch} on each of {world} process(es)")

    def indices(self, step: int) -> list[int]:
        """Step numbers start at 1."""
        epoch, position = divmod(step - 1, self.batches)
        order = np.random.default_rng([self.seed, self.salt, epoch]).permutation(self.size)
        padded = np.resize(order, self.per_rank * self.world)   # wrap around, as distributed samplers pad
        shard = padded[self.rank:: self.world]
        return [int(i) for i in shard[position * self.batch: (position + 1) * self.batch]]


class TrainingBatches:
    """Step -> (features [2B, rows, segments, F], labels [2B]): B normal then B abnormal."""

    def __init__(self, normal: VideoPool, abnormal: VideoPool, batch: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.normal, self.abnormal = normal, abnormal
        self.normal_order = ShardedOrder(len(normal), batch, seed, 0, rank, world)
        self.abnormal_order = ShardedOrder(len(abnormal), batch, seed, 1, rank, world)
        self.batch = batch

    def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        videos = [self.normal[i] for i in self.normal_order.indices(step)]
        videos += [self.abnormal[i] for i in self.abnormal_order.indices(step)]
        labels = np.array([0.0] * self.batch + [1.0] * self.batch, dtype=np.float32)
        return np.stack(videos), labels


def split_labels(entries: list[VideoEntry]) -> tuple[list[VideoEntry], list[VideoEntry]]:
    return [e for e in entries if e.label == 0], [e for e in entries if e.label == 1]


def hold_out(entries: list[VideoEntry], fraction: float, seed: int) -> tuple[list[VideoEntry], list[VideoEntry]]:
    """Split off a seeded, label-stratified validation share: (train, validation)."""
    if fraction <= 0:
        return list(entries), []
    rng = np.random.default_rng([seed, 7])
    train, val = [], []
    for group in split_labels(entries):
        order = rng.permutation(len(group))
        n = max(1, int(round(fraction * len(group)))) if group else 0
        if n >= len(group):
            raise FeatureSetError(f"holding out {fraction:.0%} leaves no training video of label "
                                  f"{group[0].label if group else '?'} ({len(group)} in the list)")
        chosen = set(order[:n].tolist())
        for i, e in enumerate(group):
            (val if i in chosen else train).append(e)
    return train, val


def cpu_workers(requested: int) -> int:
    """DataLoader worker processes: never more than the machine has."""
    return max(0, min(requested, os.cpu_count() or 1))
