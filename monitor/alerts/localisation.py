"""Where in the frame an alert is, from SSRL's patch grids.

For a snippet that starts or extends an alert, each patch of each grid in turn has its
features replaced by the mean of its grid's patches in that snippet (an occlusion that keeps
the features in the range the model knows; `occlusion="zero"` puts zeros instead); the spatial graph fuses every variant with the
snippet's crop features and the temporal graph re-scores it in the snippet's own window (the
window its reported score came from, the other snippets unchanged). A patch's effect is how
much the snippet's score falls. All variants of a snippet go through each graph in one
batched call, so locating costs two graph runs per alert snippet and nothing for the others.

Grids are fused onto the cells of the finest grid (the one with most cells): a patch's effect
is spread over the fine cells it overlaps in proportion to the overlap, and the grids are
summed. Patch rectangles are cut from the resized frame, and the resize maps the whole camera
frame onto it (the aspect ratio is ignored, nothing is cropped), so a rectangle divided by the
resized frame's size is its place in the camera frame, normalised to [0, 1].

`heat` is that fused map, rows x columns of the finest grid, in score units, negative effects
clipped to 0. `box` = [x0, y0, x1, y1], normalised to the frame: the hottest region, the
connected cells (4-neighbours) holding at least BOX_FRACTION of the hottest cell's heat,
grown from the hottest cell. A stage-1 bundle has no patches: no heat, no box.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from monitor.model.bundle import Bundle

OCCLUSIONS = ("mean", "zero")
BOX_FRACTION = 0.5     # cells at or above this share of the hottest cell's heat belong to the box
OVERLAY_ALPHA = 0.5    # how strongly the hottest cell is tinted on the snapshot
HOT_BGR = (0, 0, 255)  # the tint: red, in proportion to each cell's share of the hottest
BOX_BGR = (0, 255, 255)  # the box: yellow


def grid_cells(frame_size: tuple[int, int], grid: int) -> np.ndarray:
    """A grid's patch rectangles on the resized frame, row-major, normalised:
    [rows * cols, 4] as (x0, y0, x1, y1). The same edges as the preprocessing cuts
    (floor(i * size / n), see monitor.video.preprocess.grid_edges)."""
    w, h = frame_size
    rows, cols = grid // 10, grid % 10
    ys = (np.arange(rows + 1) * h) // rows
    xs = (np.arange(cols + 1) * w) // cols
    return np.array([(xs[j] / w, ys[i] / h, xs[j + 1] / w, ys[i + 1] / h)
                     for i in range(rows) for j in range(cols)], np.float64)


def overlap_matrix(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """[fine cells, coarse patches]: the share of each fine cell covered by each patch."""
    x0 = np.maximum(fine[:, None, 0], coarse[None, :, 0])
    y0 = np.maximum(fine[:, None, 1], coarse[None, :, 1])
    x1 = np.minimum(fine[:, None, 2], coarse[None, :, 2])
    y1 = np.minimum(fine[:, None, 3], coarse[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (fine[:, 2] - fine[:, 0]) * (fine[:, 3] - fine[:, 1])
    return inter / area[:, None]


@dataclass
class SnippetContext:
    """What locating a reported snippet needs: the window its score came from [T, C, F], its
    position there, and its own crop [C, F] and patch [ΣP, F] features."""
    window: np.ndarray
    position: int
    crops: np.ndarray
    patches: np.ndarray


class Localiser:
    """Occlusion heat of one snippet through a bundle's spatial and temporal graphs.

    `run(graph, *inputs)` runs a bundle graph (the engine passes its own, which carries the
    RunOptions that stop() uses); `calls` counts the snippets located, for tests and figures."""

    def __init__(self, bundle: Bundle, frame_size: tuple[int, int], run=None, occlusion: str = "mean"):
        if occlusion not in OCCLUSIONS:
            raise ValueError(f"occlusion must be one of {', '.join(OCCLUSIONS)}, got {occlusion!r}")
        m = bundle.manifest
        self.bundle = bundle
        self.occlusion = occlusion
        self.grids = list(m.grids) if m.stage > 1 else []
        self.run = run or (lambda graph, *inputs: graph(*inputs))
        self.calls = 0
        if not self.grids:
            self.shape = None
            return
        finest = max(self.grids, key=lambda g: (g // 10) * (g % 10))
        self.shape = (finest // 10, finest % 10)
        self.cells = grid_cells(frame_size, finest)
        self._slices, self._spread, start = [], [], 0
        for g in self.grids:
            n = (g // 10) * (g % 10)
            self._slices.append(slice(start, start + n))
            self._spread.append(overlap_matrix(self.cells, grid_cells(frame_size, g)))
            start += n
        self.patch_count = start

    @property
    def available(self) -> bool:
        return self.shape is not None

    def effects(self, ctx: SnippetContext) -> np.ndarray:
        """[ΣP] score drop of the snippet when each patch is occluded (replaced by its grid's
        mean, or zeros)."""
        p = self.patch_count
        variants = np.repeat(np.asarray(ctx.patches, np.float32)[None], p + 1, axis=0)   # row 0: as it was
        for s in self._slices:
            fill = ctx.patches[s].mean(axis=0) if self.occlusion == "mean" else 0.0
            for j in range(s.start, s.stop):
                variants[1 + j, j] = fill
        crops = np.repeat(np.asarray(ctx.crops, np.float32)[None], p + 1, axis=0)
        fused = self.run(self.bundle.fuse, crops, variants)                               # [P + 1, C, F]
        windows = np.repeat(np.asarray(ctx.window, np.float32)[None], p + 1, axis=0)
        windows[:, ctx.position] = fused
        scores = self.run(self.bundle.scores_at, windows, [ctx.position])[:, 0]            # [P + 1]
        self.calls += 1
        return (scores[0] - scores[1:]).astype(np.float64)

    def heat(self, ctx: SnippetContext) -> "Heat":
        """The finest grid's [rows, cols] map: each grid's positive effects spread onto its
        cells and summed over the grids."""
        effects = np.clip(self.effects(ctx), 0.0, None)
        fine = sum(spread @ effects[s] for spread, s in zip(self._spread, self._slices))
        return Heat(fine.reshape(self.shape), self.cells)


@dataclass
class Heat:
    """A heat map on the finest grid and that grid's cells [rows * cols, 4] (normalised)."""
    values: np.ndarray
    cells: np.ndarray

    @property
    def box(self) -> list[float] | None:
        return hottest_box(self.values, self.cells)


def hottest_box(heat: np.ndarray, cells: np.ndarray, fraction: float = BOX_FRACTION) -> list[float] | None:
    """The connected cells around the hottest one that hold at least `fraction` of its heat
    -> their bounding box [x0, y0, x1, y1] (normalised); None when nothing is hot."""
    rows, cols = heat.shape
    top = float(heat.max())
    if not np.isfinite(top) or top <= 0:
        return None
    hot = heat >= fraction * top
    start = np.unravel_index(int(np.argmax(heat)), heat.shape)
    seen, todo = {start}, [start]
    while todo:
        r, c = todo.pop()
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= rr < rows and 0 <= cc < cols and hot[rr, cc] and (rr, cc) not in seen:
                seen.add((rr, cc))
                todo.append((rr, cc))
    chosen = cells[[r * cols + c for r, c in seen]]
    return [round(float(v), 4) for v in (chosen[:, 0].min(), chosen[:, 1].min(), chosen[:, 2].max(), chosen[:, 3].max())]


class CameraLocator:
    """One camera's recent reported snippets (as many as an alert needs to start) and the
    alert policy's way to locate them: `where(n)` is the mean heat of the last n."""

    def __init__(self, localiser: Localiser, keep: int):
        self.localiser = localiser
        self._recent: deque = deque(maxlen=max(1, keep))

    def seen(self, ctx: SnippetContext | None) -> None:
        """Every reported snippet, in order (None when its features are not at hand)."""
        self._recent.append(ctx)

    def recent(self, n: int = 1) -> list:
        """The contexts of the last n reported snippets (None where features were not at hand)."""
        return list(self._recent)[-n:]

    def where(self, n: int = 1) -> Heat | None:
        """The mean heat of the last n reported snippets; None without patches."""
        return mean_heat(self.localiser, self.recent(n))[0]


def mean_heat(localiser: Localiser, contexts: list) -> tuple[Heat | None, int]:
    """(the mean heat of the snippets, how many were located); (None, 0) without patches or
    without any context at hand."""
    contexts = [c for c in contexts if c is not None]
    if not localiser.available or not contexts:
        return None, 0
    heats = [localiser.heat(c) for c in contexts]
    return Heat(np.mean([h.values for h in heats], axis=0), heats[0].cells), len(heats)


class AlertHeat:
    """The heat of an alert's snippets as they come: their mean so far, and its box."""

    def __init__(self):
        self._sum: np.ndarray | None = None
        self._cells: np.ndarray | None = None
        self._n = 0

    def add(self, heat: Heat | None) -> None:
        if heat is None:
            return
        self._sum = heat.values.copy() if self._sum is None else self._sum + heat.values
        self._cells = heat.cells
        self._n += 1

    @property
    def heat(self) -> Heat | None:
        return None if self._sum is None else Heat(self._sum / self._n, self._cells)

    def fields(self) -> dict:
        """`box` and `heat` of an alert message (docs/MESSAGES.md): null without patches."""
        heat = self.heat
        if heat is None:
            return {"box": None, "heat": None}
        return {"box": heat.box, "heat": [[round(float(v), 5) for v in row] for row in heat.values]}


def draw_overlay(image: np.ndarray, heat: Heat | None) -> np.ndarray:
    """A copy of a BGR frame with the heat map blended over it (red where hot) and the box
    drawn; the frame itself when there is nothing to show."""
    if heat is None or not np.isfinite(heat.values).all() or float(heat.values.max()) <= 0:
        return image
    box, heat = heat.box, heat.values
    h, w = image.shape[:2]
    level = np.clip(heat / float(heat.max()), 0, 1).astype(np.float32)
    # Cells are blocks: nearest-neighbour keeps the grid visible, as the model saw it.
    level = cv2.resize(level, (w, h), interpolation=cv2.INTER_NEAREST)
    alpha = (OVERLAY_ALPHA * level)[..., None]
    red = np.array(HOT_BGR, np.float32)
    out = (image.astype(np.float32) * (1 - alpha) + red * alpha).astype(np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        thick = max(1, round(min(w, h) / 120))
        corners = (int(x0 * w), int(y0 * h)), (min(w - 1, int(x1 * w)), min(h - 1, int(y1 * h)))
        cv2.rectangle(out, *corners, BOX_BGR, thick, cv2.LINE_AA)
    return out
