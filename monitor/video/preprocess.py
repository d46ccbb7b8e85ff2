"""The one preprocessing path: 16 decoded frames -> the crop clips and patch clips the I3D
backbone takes. Used live (monitor) and by offline feature extraction (training.extract), so
training features and live features cannot drift apart. numpy, OpenCV and Pillow only.

What it computes (SPEC.md §1, the published I3D-ResNet50 feature pipeline):
- frames arrive as OpenCV decodes them (BGR uint8, [16, H, W, 3]) and are turned into RGB;
- each frame is resized to `frame_size` (width, height; default 340 x 256, aspect ratio
  ignored) and scaled with x * 2 / 255 - 1 into [-1, 1];
- ten crops of `crop_size` (top-left, top-right, centre, bottom-left, bottom-right, then the
  same five positions on the horizontally flipped frames), or the centre crop alone;
- patch grids (SSRL): grid 23 = 2 rows x 3 columns, patches row-major, each resized to
  `patch_size` x `patch_size`.

Resize modes:
- "reference": Pillow's LANCZOS filter on 8-bit RGB images, as the published pipeline did
  (it opened extracted frames with Pillow and called resize((340, 256), ANTIALIAS), and
  ANTIALIAS is LANCZOS). Closest to the released features; slow.
- "fast": OpenCV (area averaging when shrinking, bilinear when enlarging); for live use.

Patch geometry decision. The published SSRL code does not include its patch extraction.
We split the *resized* frame (frame_size, after the RGB conversion, before scaling) into the
grid and resize every patch to patch_size. Reasons: the published pipeline resizes every
frame to 340 x 256 before anything else, so the resized frame is the "frame" the paper's
patches are cut from; it makes patch content independent of the camera's resolution (a
1080p camera and a 240p one give patches covering the same share of the scene at the same
detail as the crops); and it keeps one resize step shared by crops and patches. Grid edges
are floor(i * size / n), so patches tile the frame without overlap or gap even when the
size does not divide evenly (340 / 3, 256 / 5). This is recorded in the manifest as
"patch_source": "resized_frame".
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

RESIZE_MODES = ("fast", "reference")
RESIZE_FILTERS = {"reference": "pillow-lanczos",
                  "fast": "opencv-area-when-shrinking-bilinear-when-enlarging"}
PATCH_SOURCE = "resized_frame"
COLOR = "RGB"
SCALE = (-1.0, 1.0)
CROP_ORDER = ("top_left", "top_right", "centre", "bottom_left", "bottom_right")

# x * 2 / 255 - 1 computed in float64 (as the published pipeline did) and stored as float32:
# a table lookup (cv2.LUT, whose output takes the table's type) gives exactly those values
# without a float64 pass over the frames, about ten times faster than numpy arithmetic.
_SCALE_TABLE = (np.arange(256, dtype=np.float64) * 2 / 255 - 1).astype(np.float32)


class GeometryError(ValueError):
    """A preprocessing geometry that cannot work; the message names the field."""


def snippet_count(n_frames: int, length: int = 16) -> int:
    """Snippets of `length` consecutive frames without overlap (SPEC §1): (N - 16) // 16 + 1,
    and none for a video shorter than one snippet."""
    if n_frames < length:
        return 0
    return (n_frames - length) // length + 1


def grid_shape(grid: int) -> tuple[int, int]:
    """A grid named by two digits, rows then columns: 23 -> (2, 3)."""
    return grid // 10, grid % 10


def grid_edges(size: int, parts: int) -> np.ndarray:
    """Edges of `parts` non-overlapping intervals tiling [0, size): floor(i * size / parts)."""
    return (np.arange(parts + 1) * size) // parts


@dataclass(frozen=True)
class Geometry:
    frame_size: tuple[int, int] = (340, 256)  # width, height
    crop_size: int = 224
    crops: int = 10
    grids: tuple[int, ...] = (23, 35, 47)
    patch_size: int = 224
    resize: str = "fast"
    snippet_length: int = 16

    def __post_init__(self):
        object.__setattr__(self, "frame_size", tuple(int(v) for v in self.frame_size))
        object.__setattr__(self, "grids", tuple(int(g) for g in self.grids))
        self.validate()

    def validate(self) -> None:
        w, h = self.frame_size if len(self.frame_size) == 2 else (0, 0)
        if len(self.frame_size) != 2 or w < 1 or h < 1:
            raise GeometryError(f"preprocessing field 'frame_size' = {list(self.frame_size)}: give [width, height], both positive")
        if not 1 <= self.crop_size <= min(w, h):
            raise GeometryError(f"preprocessing field 'crop_size' = {self.crop_size}: must lie in 1..{min(w, h)} "
                                f"to fit the {w}x{h} frame")
        if self.crops not in (1, 10):
            raise GeometryError(f"preprocessing field 'crops' = {self.crops}: must be 10 (ten-crop) or 1 (centre crop)")
        for g in self.grids:
            r, c = grid_shape(g)
            if not (10 <= g <= 99 and r >= 1 and c >= 1):
                raise GeometryError(f"preprocessing field 'grids' = {list(self.grids)}: {g} is not a rows·columns "
                                    f"grid such as 23")
            if r > h or c > w:
                raise GeometryError(f"preprocessing field 'grids' = {list(self.grids)}: grid {g} has more cells than "
                                    f"the {w}x{h} frame has pixels")
        if self.patch_size < 1:
            raise GeometryError(f"preprocessing field 'patch_size' = {self.patch_size}: must be positive")
        if self.resize not in RESIZE_MODES:
            raise GeometryError(f"preprocessing field 'resize' = {self.resize!r}: must be one of {', '.join(RESIZE_MODES)}")
        if self.snippet_length < 1:
            raise GeometryError(f"preprocessing field 'snippet_length' = {self.snippet_length}: must be at least 1")

    @property
    def patches(self) -> list[int]:
        return [r * c for r, c in map(grid_shape, self.grids)]

    def crop_boxes(self) -> list[tuple[int, int]]:
        """(top, left) of the five crop positions in CROP_ORDER on the resized frame."""
        w, h = self.frame_size
        s = self.crop_size
        return [(0, 0), (0, w - s), ((h - s) // 2, (w - s) // 2), (h - s, 0), (h - s, w - s)]

    def patch_boxes(self, grid: int) -> list[tuple[int, int, int, int]]:
        """(top, bottom, left, right) of each patch of `grid` on the resized frame, row-major."""
        w, h = self.frame_size
        r, c = grid_shape(grid)
        rows, cols = grid_edges(h, r), grid_edges(w, c)
        return [(int(rows[i]), int(rows[i + 1]), int(cols[j]), int(cols[j + 1])) for i in range(r) for j in range(c)]

    def to_dict(self) -> dict:
        """The manifest's "preprocessing" field."""
        return {
            "frame_size": list(self.frame_size),
            "crop_size": self.crop_size,
            "crops": self.crops,
            "crop_order": list(CROP_ORDER) + ["flipped_" + name for name in CROP_ORDER] if self.crops == 10 else ["centre"],
            "grids": list(self.grids),
            "patch_size": self.patch_size,
            "patch_source": PATCH_SOURCE,
            "resize": self.resize,
            "resize_filter": RESIZE_FILTERS[self.resize],  # for frames and patches alike
            "snippet_length": self.snippet_length,
            "color": COLOR,
            "scale": list(SCALE),
        }

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> "Geometry":
        if not isinstance(d, dict):
            raise GeometryError(f"preprocessing must be an object, got {d!r}")
        if d.get("color", COLOR) != COLOR:
            raise GeometryError(f"preprocessing field 'color' = {d['color']!r}: this monitor feeds {COLOR} frames")
        if list(d.get("scale", SCALE)) != list(SCALE):
            raise GeometryError(f"preprocessing field 'scale' = {d['scale']!r}: this monitor scales to {list(SCALE)}")
        if d.get("patch_source", PATCH_SOURCE) != PATCH_SOURCE:
            raise GeometryError(f"preprocessing field 'patch_source' = {d['patch_source']!r}: this monitor cuts "
                                f"patches from the {PATCH_SOURCE}")
        kwargs = {}
        for name, kind in (("frame_size", list), ("crop_size", int), ("crops", int), ("grids", list),
                           ("patch_size", int), ("resize", str), ("snippet_length", int)):
            if name not in d:
                continue
            value = d[name]
            ok = isinstance(value, (list, tuple)) if kind is list else isinstance(value, kind) and not isinstance(value, bool)
            if ok and kind is list:
                ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            if not ok:
                raise GeometryError(f"preprocessing field '{name}' = {value!r}: must be "
                                    f"{'a list of integers' if kind is list else kind.__name__}")
            kwargs[name] = tuple(value) if kind is list else value
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def from_manifest(cls, manifest, **overrides) -> "Geometry":
        """The geometry a bundle was exported for: its "preprocessing" field, with the crops,
        grids and snippet length the manifest itself states (a backbone-only bundle, stage 0,
        has no head and so no grids of its own: its preprocessing field's grids stand)."""
        fields = {"crops": manifest.crops, "snippet_length": manifest.snippet_length}
        if manifest.stage != 0:
            fields["grids"] = tuple(manifest.grids)
        fields.update(overrides)
        return cls.from_dict(manifest.preprocessing or {}, **fields)


def scale(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (any strides) -> contiguous float32 in [-1, 1] with x * 2 / 255 - 1; into `out`
    (C-contiguous, same shape) when given."""
    pixels = np.ascontiguousarray(pixels)
    if out is None:
        out = np.empty(pixels.shape, np.float32)
    width = pixels.shape[-1] if pixels.ndim > 1 else 1
    cv2.LUT(pixels.reshape(-1, width), _SCALE_TABLE, dst=out.reshape(-1, width))
    return out


def resize_planes(planes: np.ndarray, size: tuple[int, int], mode: str = "fast") -> np.ndarray:
    """RGB planes [3, T, h, w] uint8 (any strides) -> [3, T, size[1], size[0]] uint8.
    Channel-first because the clips the backbone takes are; the loops run over frames and
    planes, never over pixels."""
    w, h = size
    if planes.shape[-2:] == (h, w):
        return np.ascontiguousarray(planes)
    out = np.empty(planes.shape[:2] + (h, w), np.uint8)
    if mode == "reference":
        # Pillow on the interleaved RGB frame, exactly as the published pipeline called it
        # (and about twice as fast as Pillow one band at a time).
        for t in range(planes.shape[1]):
            image = Image.fromarray(np.ascontiguousarray(planes[:, t].transpose(1, 2, 0)))
            out[:, t] = np.asarray(image.resize(size, Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    else:
        # OpenCV's single-channel resize is its fastest path.
        interpolation = fast_interpolation(planes.shape[-2:], size)
        for c in range(planes.shape[0]):
            for t in range(planes.shape[1]):
                cv2.resize(planes[c, t], size, dst=out[c, t], interpolation=interpolation)
    return out


def fast_interpolation(source_hw: tuple[int, int], size: tuple[int, int]) -> int:
    """The "fast" mode's OpenCV filter (RESIZE_FILTERS["fast"]): area averaging when shrinking
    both sides, which anti-aliases as LANCZOS does; bilinear otherwise."""
    shrinking = size[0] <= source_hw[1] and size[1] <= source_hw[0]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def resize_frames(frames: np.ndarray, size: tuple[int, int], mode: str = "fast") -> np.ndarray:
    """BGR frames [T, H, W, 3] uint8 as decoded -> BGR frames [T, size[1], size[0], 3] uint8,
    resized one interleaved frame at a time (contiguous, as the decoder made them)."""
    t = frames.shape[0]
    w, h = size
    if frames.shape[1:3] == (h, w):
        return frames
    small = np.empty((t, h, w, 3), np.uint8)
    if mode == "reference":
        for i in range(t):  # the published call: Pillow, RGB image, LANCZOS
            rgb = Image.fromarray(np.ascontiguousarray(frames[i, :, :, ::-1]))
            small[i] = np.asarray(rgb.resize(size, Image.Resampling.LANCZOS))[:, :, ::-1]  # back to BGR
    else:
        interpolation = fast_interpolation(frames.shape[1:3], size)
        for i in range(t):
            cv2.resize(np.ascontiguousarray(frames[i]), size, dst=small[i], interpolation=interpolation)
    return small


def resize_cells(small: np.ndarray, boxes: list[tuple[int, int, int, int]], size: int, mode: str = "fast",
                 out: np.ndarray | None = None) -> np.ndarray:
    """Cells (top, bottom, left, right) of frames [T, h, w, 3] uint8, each resized to size x size
    -> [cells, T, size, size, 3] uint8, interleaved, straight into its place in the output (no
    plane split, no reordering copy). Every channel is filtered on its own, so this equals
    resizing each plane alone (tests/test_preprocess.py holds it to that). In "fast" mode a
    cell's T frames go through OpenCV as one tall image where that gives the same bytes as
    frame by frame (stacks_exactly): one call instead of T, which for the demo's 49 small
    patches halves the cost, most of it being the calls themselves."""
    t = small.shape[0]
    if out is None:
        out = np.empty((len(boxes), t, size, size, 3), np.uint8)
    for k, (top, bottom, left, right) in enumerate(boxes):
        if mode == "reference":
            for i in range(t):
                image = Image.fromarray(np.ascontiguousarray(small[i, top:bottom, left:right]))
                out[k, i] = np.asarray(image.resize((size, size), Image.Resampling.LANCZOS))
            continue
        h, w = bottom - top, right - left
        interpolation = fast_interpolation((h, w), (size, size))
        if t > 1 and out[k].flags.c_contiguous and stacks_exactly((h, w), size, t):
            tall = np.ascontiguousarray(small[:, top:bottom, left:right]).reshape(t * h, w, 3)
            cv2.resize(tall, (size, t * size), dst=out[k].reshape(t * size, size, 3), interpolation=interpolation)
            continue
        for i in range(t):
            cv2.resize(small[i, top:bottom, left:right], (size, size), dst=out[k, i], interpolation=interpolation)
    return out


@functools.lru_cache(maxsize=None)
def stacks_exactly(cell_hw: tuple[int, int], size: int, frames: int) -> bool:
    """Whether `frames` cells of cell_hw = (h, w), stacked into one image h * frames tall and
    resized to size * frames rows, give the bytes each cell resized alone gives ("fast" mode).
    The vertical scale is the same either way, so output row j of frame k reads the rows
    frame k alone would, shifted by k * h, as long as the filter never reaches past a cell's
    top or bottom edge: alone, OpenCV clamps there; stacked, it would read the neighbouring
    frame. Area averaging (shrinking) never crosses, and bilinear does not when h >= size.
    Float rounding of the larger row coordinates could still change a filter weight, so the
    claim is also checked once per shape, on seeded random pixels: any changed weight shows."""
    h, w = cell_hw
    if h < size:
        return False
    interpolation = fast_interpolation(cell_hw, (size, size))
    cells = np.random.default_rng(h * 7919 + w).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
    alone = np.stack([cv2.resize(cell, (size, size), interpolation=interpolation) for cell in cells])
    tall = cv2.resize(cells.reshape(frames * h, w, 3), (size, frames * size), interpolation=interpolation)
    return bool(np.array_equal(tall.reshape(alone.shape), alone))


def pixels_to_clips(pixels: np.ndarray) -> np.ndarray:
    """Backbone pixels [N, T, H, W, 3] BGR uint8 -> float clips [N, 3, T, H, W] RGB in [-1, 1]
    (the float backbone input): the layout change and scaling a pixel-input graph does inside.
    OpenCV splits the channels and `scale` writes each plane in place: no strided copy."""
    n, t, h, w, _ = pixels.shape
    out = np.empty((n, 3, t, h, w), np.float32)
    for i in range(n):
        planes = cv2.split(np.ascontiguousarray(pixels[i]).reshape(t * h, w, 3))
        for c in range(3):
            scale(planes[2 - c], out=out[i, c].reshape(t * h, w))  # BGR -> RGB
    return out


class Preprocessor:
    """Turns one snippet of frames into the backbone's crop and patch clips for a Geometry.

    The one path is `pixels`: frames resized once, the crops cut from them (views until they
    are copied into a batch), the patch cells resized in one pass; uint8 BGR [N, T, H, W, 3],
    the input of a pixel-input backbone graph, which scales and reorders inside. `snippet`
    gives the same clips as float [N, 3, T, H, W] RGB in [-1, 1] for float-input graphs."""

    def __init__(self, geometry: Geometry | None = None):
        self.geometry = geometry or Geometry()
        g = self.geometry
        self._patch_boxes = [box for grid in g.grids for box in g.patch_boxes(grid)]

    def _check(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        n = self.geometry.snippet_length
        if frames.ndim != 4 or frames.shape[0] != n or frames.shape[3] != 3:
            raise ValueError(f"frames: expected [{n}, H, W, 3] BGR frames, got shape {list(frames.shape)}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames: expected uint8 pixels as OpenCV decodes them, got {frames.dtype}")
        return frames

    def small(self, frames: np.ndarray) -> np.ndarray:
        """BGR uint8 [16, H, W, 3] -> BGR uint8 [16, height, width, 3] at frame_size."""
        return resize_frames(self._check(frames), self.geometry.frame_size, self.geometry.resize)

    def resize_frame(self, image: np.ndarray) -> np.ndarray:
        """One BGR frame [H, W, 3] as decoded -> at frame_size, exactly as `small` resizes each
        frame of a snippet (the live engine resizes frames as they arrive)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame: expected [H, W, 3] uint8 BGR, got {image.dtype} {list(image.shape)}")
        return resize_frames(image[None], self.geometry.frame_size, self.geometry.resize)[0]

    def planes(self, frames: np.ndarray) -> np.ndarray:
        """BGR uint8 [16, H, W, 3] -> RGB uint8 planes [3, 16, height, width] at frame_size."""
        return np.ascontiguousarray(self.small(frames).transpose(3, 0, 1, 2)[::-1])

    def resized(self, frames: np.ndarray) -> np.ndarray:
        """BGR uint8 [16, H, W, 3] -> RGB uint8 [16, height, width, 3] at frame_size."""
        return np.ascontiguousarray(self.small(frames)[..., ::-1])

    def crop_views(self, small: np.ndarray) -> list[np.ndarray]:
        """Resized frames [T, h, w, 3] -> the crops in SPEC §1 order, as views [T, s, s, 3]."""
        g = self.geometry
        s = g.crop_size
        boxes = g.crop_boxes()
        if g.crops == 1:
            boxes, views = boxes[2:3], [small]
        else:
            views = [small, small[:, :, ::-1]]  # the same five positions on the mirrored frames
        return [view[:, y:y + s, x:x + s] for view in views for y, x in boxes]

    def patch_pixels(self, small: np.ndarray, out: np.ndarray | None = None) -> np.ndarray | None:
        """Resized frames [T, h, w, 3] -> patches [ΣP, T, p, p, 3] uint8 (grids in order, each
        row-major); None when the geometry has no grids."""
        if not self._patch_boxes:
            return None
        return resize_cells(small, self._patch_boxes, self.geometry.patch_size, self.geometry.resize, out)

    def pixels(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """16 BGR frames -> (crops [C, 16, s, s, 3], patches [ΣP, 16, p, p, 3] or None), uint8 BGR."""
        small = self.small(frames)
        return np.stack(self.crop_views(small)), self.patch_pixels(small)

    def crops(self, frames: np.ndarray) -> np.ndarray:
        """[16, H, W, 3] BGR uint8 -> [crops, 3, 16, crop, crop] float32."""
        return pixels_to_clips(np.stack(self.crop_views(self.small(frames))))

    def patches(self, frames: np.ndarray) -> np.ndarray | None:
        """[16, H, W, 3] BGR uint8 -> [ΣP, 3, 16, patch, patch] float32 (grids in order, each
        row-major); None when the geometry has no grids."""
        patches = self.patch_pixels(self.small(frames))
        return None if patches is None else pixels_to_clips(patches)

    def snippet(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Both as float clips, resizing the frames once: (crops, patches or None)."""
        crops, patches = self.pixels(frames)
        return pixels_to_clips(crops), None if patches is None else pixels_to_clips(patches)
