"""A synthetic surveillance camera, `synthetic://`: a pedestrian square seen from above at
an angle, rendered live with numpy and OpenCV, with anomalous events injected at random
times and places and the ground truth of every frame known.

The scene: a textured static background (building front, pavement, grass, benches, lamp
posts, trees whose crowns sway), people walking along walkways at 1-1.7 m/s with a gait,
perspective (people nearer the camera are larger and move faster in pixels), lighting that
drifts (a slow global gain and cloud shadows passing), and sensor noise.

The anomalies, each played by its own actors so that the normal scene is the same with or
without them: `run` (someone breaks into a run), `fall` (someone falls, struggles, gets up),
`fight` (two people meet and fight), `flash` (flashes of an explosion or a flare), `fire`
(a fire flares up, flickers and smokes), `throw` (someone throws an object), `vehicle` (a
car or motorbike driving through the pedestrian area). Most are small, a few percent of
the frame, as the local anomalies SSRL is made for.

Parameters come from the URL query, for example
`synthetic://lobby?seed=3&rate=2&size=1&fps=15&width=320&height=240&first=8&duration=60`:

  seed      scene, people and events (int, default 0)
  rate      anomalies per minute on average (default 3; 0 = normal video only; at most 6)
  size      anomaly size multiplier (default 1: mostly small; 2-3 puts people nearer the camera
            and makes fires, flashes and vehicles larger)
  kinds     comma-separated subset of the kinds above (default all)
  first     seconds before the first anomaly starts (default 8; `first=random`: drawn like the others)
  fps       frame rate (default 15)
  width, height   frame size (default 320 x 240)
  people    people walking in view on average (default 6)
  duration  seconds before the stream ends (default: endless)
  realtime  1 to pace reads to the frame rate (default), 0 to render as fast as possible

Ground truth: a frame is anomalous when an event draws its anomalous part in it; every
drawn event part is recorded with its box (`boxes(i)`), and `write_ground_truth(stem)`
writes `<stem>_gt.npy` (uint8 per frame) and `<stem>_events.json` beside a recording.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

SCHEME = "synthetic"
KINDS = ("run", "fall", "fight", "flash", "fire", "throw", "vehicle")
# `synthetic://` alone is the demo camera: anomalies about every 20 s, the first 8 s in.
DEFAULT_URL = "synthetic://"
# An event whose largest box covers at most this fraction of the frame counts as small.
SMALL_AREA = 0.05
PERSON_M = 1.7      # a person's height in metres: converts m/s into person-heights/s
NOISE_PAD = 24      # the noise bank is larger than the frame; each frame reads a random window
MIN_GAP = 9.0       # seconds between the starts of two anomalies (the longest lasts about 8 s)
MAX_RATE = 6.0      # anomalies per minute


class SyntheticError(ValueError):
    """A bad synthetic:// URL or parameter; the message names the parameter."""


@dataclass
class SyntheticConfig:
    seed: int = 0
    rate: float = 3.0
    size: float = 1.0
    kinds: tuple[str, ...] = KINDS
    first: float | None = 8.0
    fps: float = 15.0
    width: int = 320
    height: int = 240
    people: float = 6.0
    duration: float | None = None
    realtime: bool = True
    name: str = "synthetic"

    def validate(self) -> "SyntheticConfig":
        def bad(key, why):
            raise SyntheticError(f"synthetic camera parameter '{key}' = {getattr(self, key)!r}: {why}")
        if not 0 <= self.rate <= MAX_RATE:
            bad("rate", f"anomalies per minute must lie in [0, {MAX_RATE}] (events do not overlap)")
        if not 0.2 <= self.size <= 4:
            bad("size", "size multiplier must lie in [0.2, 4]")
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            bad("kinds", f"choose among {', '.join(KINDS)}")
        if self.first is not None and self.first < 0:
            bad("first", "must be >= 0 seconds")
        if not 1 <= self.fps <= 120:
            bad("fps", "must lie in [1, 120]")
        if not (64 <= self.width <= 3840 and self.width % 2 == 0):
            bad("width", "must be an even number of pixels in [64, 3840]")
        if not (48 <= self.height <= 2160 and self.height % 2 == 0):
            bad("height", "must be an even number of pixels in [48, 2160]")
        if not 0 <= self.people <= 40:
            bad("people", "must lie in [0, 40]")
        if self.duration is not None and self.duration <= 0:
            bad("duration", "must be > 0 seconds")
        return self

    @classmethod
    def from_url(cls, url: str) -> "SyntheticConfig":
        parts = urlsplit(url)
        if parts.scheme != SCHEME:
            raise SyntheticError(f"{url!r}: not a synthetic:// URL")
        known = {f.name: f for f in fields(cls)}
        values: dict = {"name": parts.netloc or "synthetic"}
        for key, items in parse_qs(parts.query, keep_blank_values=True).items():
            if key not in known or key == "name":
                raise SyntheticError(f"{url!r}: unknown parameter '{key}' "
                                     f"(known: {', '.join(k for k in known if k != 'name')})")
            raw = items[-1]
            try:
                if key == "kinds":
                    values[key] = tuple(k.strip() for k in raw.split(",") if k.strip())
                elif key == "realtime":
                    if raw.lower() not in ("0", "1", "true", "false", "yes", "no"):
                        raise ValueError(raw)
                    values[key] = raw.lower() in ("1", "true", "yes")
                elif key in ("seed", "width", "height"):
                    values[key] = int(raw)
                elif key == "first" and raw == "random":
                    values[key] = None
                else:
                    values[key] = float(raw)
            except ValueError:
                raise SyntheticError(f"{url!r}: parameter '{key}' = {raw!r} is not a valid "
                                     f"{'list' if key == 'kinds' else 'number'}") from None
        return cls(**values).validate()

    def to_url(self) -> str:
        query = [f"seed={self.seed}", f"rate={self.rate:g}", f"size={self.size:g}", f"fps={self.fps:g}",
                 f"width={self.width}", f"height={self.height}", f"people={self.people:g}",
                 f"realtime={int(self.realtime)}"]
        if tuple(self.kinds) != KINDS:
            query.append("kinds=" + ",".join(self.kinds))
        query.append("first=random" if self.first is None else f"first={self.first:g}")
        if self.duration is not None:
            query.append(f"duration={self.duration:g}")
        return f"{SCHEME}://{self.name}?" + "&".join(query)


# --------------------------------------------------------------------------------------
# Scene geometry: a ground plane seen in perspective.

class Layout:
    """Where the ground is and how large a person is at each image row."""

    def __init__(self, width: int, height: int, rng: np.random.Generator):
        self.w, self.h = width, height
        self.horizon = height * rng.uniform(0.26, 0.34)
        # A person standing on the bottom row is this tall; size grows linearly below the horizon.
        self.bottom_height = height * rng.uniform(0.22, 0.27)
        self.near = height - 1.0
        self.far = self.horizon + 0.18 * (height - self.horizon)   # farthest row people walk on

    def person_height(self, y: float) -> float:
        return max(3.0, self.bottom_height * (y - self.horizon) / (self.h - self.horizon))

    def row_for_height(self, h: float) -> float:
        return self.horizon + h * (self.h - self.horizon) / self.bottom_height

    def step(self, y: float, speed_ms: float, fps: float) -> float:
        """Pixels per frame for a speed in m/s at image row y."""
        return speed_ms / PERSON_M * self.person_height(y) / fps


def _value_noise(rng, h, w, scales=(4, 16, 64), weights=(0.5, 0.3, 0.2)) -> np.ndarray:
    """Smooth random texture in [-1, 1]: random grids at several scales, upsampled."""
    out = np.zeros((h, w), np.float32)
    for s, wt in zip(scales, weights):
        small = rng.uniform(-1, 1, (max(2, h // s), max(2, w // s))).astype(np.float32)
        out += wt * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, -1, 1)


def _background(layout: Layout, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """The static scene (BGR uint8) and the trees whose crowns are drawn live."""
    w, h, hz = layout.w, layout.h, int(layout.horizon)
    img = np.zeros((h, w, 3), np.float32)
    # Building front above the horizon: a wall colour, texture, rows of windows.
    wall = np.array(rng.choice([[150, 160, 175], [120, 135, 160], [170, 170, 165], [110, 120, 130]]), np.float32)
    img[:hz] = wall + 18 * _value_noise(rng, hz, w)[..., None]
    win_w, win_h = max(3, w // int(rng.integers(14, 22))), max(3, hz // 5)
    gap = win_w * rng.uniform(0.6, 1.2)
    x = rng.uniform(0, gap)
    while x < w - win_w:
        for row in range(2):
            y0 = int(hz * (0.15 + 0.42 * row))
            shade = rng.uniform(40, 90)
            img[y0:y0 + win_h, int(x):int(x) + win_w] = (shade * 1.1, shade, shade * 0.9)
        x += win_w + gap
    img[max(0, hz - 2):hz] = wall * 0.55
    # Pavement: a warm grey with coarse and fine texture and a perspective tile pattern.
    ground_h = h - hz
    pave = np.array(rng.choice([[150, 150, 145], [135, 140, 150], [165, 160, 150]]), np.float32)
    img[hz:] = pave + 14 * _value_noise(rng, ground_h, w, (3, 12, 40))[..., None]
    ys = np.arange(hz, h, dtype=np.float32)
    depth = 1.0 / np.maximum((ys - layout.horizon) / (h - layout.horizon), 0.05)
    tile = rng.uniform(0.18, 0.3)
    lines = ys[np.abs(np.diff(np.floor(depth / tile), prepend=np.floor(depth[0] / tile))) > 0].astype(int)
    for y in lines:
        img[y] *= 0.82
    vanish_x = w * rng.uniform(0.35, 0.65)
    for k in range(-12, 13):
        x_bottom = vanish_x + k * w * 0.12
        cv2.line(img, (int(vanish_x + (x_bottom - vanish_x) * 0.05), hz), (int(x_bottom), h),
                 tuple(float(c) * 0.85 for c in pave), 1, cv2.LINE_AA)
    # Grass on one or both sides, with a rough texture.
    for side in rng.choice([0, 1, 2], size=1):
        for s in ([0, 1] if side == 2 else [side]):
            x0, x1 = (0, int(w * rng.uniform(0.12, 0.22))) if s == 0 else (int(w * rng.uniform(0.78, 0.88)), w)
            tex = _value_noise(rng, ground_h, x1 - x0, (2, 6, 20))
            img[hz:, x0:x1] = np.array([60, 125, 80], np.float32) + 28 * tex[..., None]
    # Benches and lamp posts standing on the ground.
    for _ in range(int(rng.integers(2, 5))):
        y = rng.uniform(layout.far, h - 5)
        ph = layout.person_height(y)
        x = rng.uniform(0, w)
        cv2.rectangle(img, (int(x), int(y - 0.3 * ph)), (int(x + 0.9 * ph), int(y - 0.22 * ph)), (40, 70, 100), -1)
        cv2.rectangle(img, (int(x), int(y - 0.45 * ph)), (int(x + 0.9 * ph), int(y - 0.4 * ph)), (40, 70, 100), -1)
    for _ in range(int(rng.integers(1, 4))):
        y = rng.uniform(layout.far, h - 5)
        ph = layout.person_height(y)
        x = int(rng.uniform(0, w))
        cv2.line(img, (x, int(y)), (x, int(y - 2.2 * ph)), (50, 50, 55), max(1, int(0.05 * ph)), cv2.LINE_AA)
        cv2.circle(img, (x, int(y - 2.2 * ph)), max(1, int(0.08 * ph)), (190, 220, 230), -1, cv2.LINE_AA)
    # Trees along the building: trunks are static, crowns sway (drawn per frame).
    trees = []
    for _ in range(int(rng.integers(1, 4))):
        y = hz + rng.uniform(0.05, 0.15) * ground_h
        ph = layout.person_height(max(y, layout.horizon + 4)) * 1.6
        x = rng.uniform(0, w)
        cv2.line(img, (int(x), int(y)), (int(x), int(y - 1.3 * ph)), (30, 50, 70), max(1, int(0.09 * ph)), cv2.LINE_AA)
        trees.append({"x": x, "y": y - 1.4 * ph, "r": 0.5 * ph, "phase": rng.uniform(0, 6.28),
                      "colour": tuple(float(c) for c in rng.uniform([30, 90, 40], [60, 140, 70]))})
    return np.clip(img, 0, 255).astype(np.uint8), trees


# --------------------------------------------------------------------------------------
# People.

SKIN = [(140, 170, 220), (100, 130, 180), (70, 90, 130), (160, 190, 230)]


def _person_colours(rng) -> dict:
    return {"shirt": tuple(int(c) for c in rng.integers(20, 235, 3)),
            "legs": tuple(int(c) for c in rng.integers(15, 120, 3)),
            "skin": SKIN[int(rng.integers(len(SKIN)))]}


def draw_person(img, x, y, h, colours, direction=1, legs=(0.0, 0.0), arms=(0.0, 0.0),
                lean=0.0, angle=0.0) -> tuple[int, int, int, int] | None:
    """A stick-and-blob person standing on (x, y), `h` pixels tall, facing `direction`.
    `legs`/`arms`: swing angles (radians) of each limb from hanging straight down, positive
    forward; `lean`: torso tilt forward; `angle`: the whole body rotated about the feet
    (a fall). Returns the drawn box (x0, y0, x1, y1) clipped to the image, or None.
    Plain floats, no numpy: this runs for every person in every frame."""
    sl, cl = math.sin(lean), math.cos(lean)
    body = [(0.0, 0.5), (0.32 * sl, 0.5 + 0.32 * cl), (0.43 * sl, 0.5 + 0.43 * cl),
            (0.288 * sl, 0.5 + 0.288 * cl)]                    # hip, neck, head, shoulder
    feet = [(0.5 * math.sin(a), 0.5 - 0.5 * math.cos(a)) for a in legs]
    sx, sy = body[3]
    hands = [(sx + 0.33 * math.sin(a), sy - 0.33 * math.cos(a)) for a in arms]
    ca, sa = math.cos(angle) * h, math.sin(angle) * h
    pts = []
    for px, py in body + feet + hands:   # facing, rotation about the feet, image axes
        px *= direction
        pts.append((int(x + ca * px + sa * py * direction), int(y + sa * px * direction - ca * py)))
    hip, neck, head, shoulder = pts[:4]
    t_body, t_leg, t_arm = max(2, int(0.15 * h)), max(1, int(0.07 * h)), max(1, int(0.05 * h))
    for foot in pts[4:6]:
        cv2.line(img, hip, foot, colours["legs"], t_leg, cv2.LINE_AA)
    cv2.line(img, hip, neck, colours["shirt"], t_body, cv2.LINE_AA)
    for hand in pts[6:8]:
        cv2.line(img, shoulder, hand, colours["shirt"], t_arm, cv2.LINE_AA)
    r = max(1, int(0.075 * h))
    cv2.circle(img, head, r, colours["skin"], -1, cv2.LINE_AA)
    pad = max(t_body, r) // 2 + r + 2
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return _clip_box(min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad, img.shape)


def _clip_box(x0, y0, x1, y1, shape) -> tuple[int, int, int, int] | None:
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    x1, y1 = min(shape[1] - 1, int(x1)), min(shape[0] - 1, int(y1))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


class Walker:
    """A normal passer-by on a walkway; may stop for a while, then walks on."""

    def __init__(self, layout: Layout, fps: float, rng: np.random.Generator, y: float, x: float | None = None):
        self.layout, self.fps, self.rng = layout, fps, rng
        self.direction = 1 if rng.random() < 0.5 else -1
        margin = 0.3 * layout.person_height(y)
        self.x = x if x is not None else (-margin if self.direction > 0 else layout.w + margin)
        self.y = y
        self.dy = rng.normal(0, 0.04)          # walkways are not perfectly level in the image
        self.speed = rng.uniform(1.0, 1.7)     # m/s
        self.cadence = rng.uniform(0.8, 1.0) * self.speed / 1.35   # strides per second
        self.phase = rng.uniform(0, 2 * math.pi)
        self.colours = _person_colours(rng)
        self.pause_left = 0
        self.pause_chance = 0.0015 if rng.random() < 0.5 else 0.0
        self.gone = False

    def step_draw(self, img) -> None:
        h = self.layout.person_height(self.y)
        if self.pause_left > 0:
            self.pause_left -= 1
            draw_person(img, self.x, self.y, h, self.colours, self.direction)
            return
        if self.rng.random() < self.pause_chance:
            self.pause_left = int(self.rng.uniform(2, 6) * self.fps)
        step = self.layout.step(self.y, self.speed, self.fps)
        self.x += self.direction * step
        self.y = float(np.clip(self.y + self.dy * step, self.layout.far, self.layout.near))
        self.phase += 2 * math.pi * self.cadence / self.fps
        swing = 0.38 * math.sin(self.phase)
        draw_person(img, self.x, self.y, h, self.colours, self.direction,
                    legs=(swing, -swing), arms=(-0.7 * swing, 0.7 * swing))
        if self.x < -h or self.x > self.layout.w + h:
            self.gone = True


# --------------------------------------------------------------------------------------
# Anomalous events. Each is played by its own actors and reports, per frame, the boxes it
# drew and whether that part is anomalous.

@dataclass
class Part:
    box: tuple[int, int, int, int]
    anomalous: bool


class Event:
    kind = ""

    def __init__(self, ident: int, layout: Layout, fps: float, rng: np.random.Generator,
                 scale: float, start: int):
        self.id, self.layout, self.fps, self.rng, self.scale = ident, layout, fps, rng, scale
        self.start = start            # frame the anomalous part is planned to begin
        self.first_anomalous = None   # frames where it was drawn, filled while rendering
        self.last_anomalous = None
        self.max_area = 0.0
        self.done = False
        self.x = self.y = 0.0

    def spawn_frame(self) -> int:
        """The frame its actors appear (they may walk in before the anomaly starts)."""
        return self.start

    def draw(self, img, i: int) -> list[Part]:
        raise NotImplementedError

    def record(self, i: int, parts: list[Part]) -> None:
        area = self.layout.w * self.layout.h
        for p in parts:
            if p.anomalous:
                self.first_anomalous = i if self.first_anomalous is None else self.first_anomalous
                self.last_anomalous = i
                x0, y0, x1, y1 = p.box
                self.max_area = max(self.max_area, (x1 - x0 + 1) * (y1 - y0 + 1) / area)

    def summary(self) -> dict:
        return {"id": self.id, "kind": self.kind, "start": self.first_anomalous, "end": self.last_anomalous,
                "x": round(self.x, 1), "y": round(self.y, 1), "scale": round(self.scale, 3),
                "max_area": round(self.max_area, 5), "small": self.max_area <= SMALL_AREA}


def _place_row(layout: Layout, rng, scale: float) -> float:
    """An image row for an actor whose size should be about `scale` times a mid-scene person."""
    target = scale * 0.9 * layout.bottom_height
    return float(np.clip(layout.row_for_height(target) + rng.normal(0, 0.05 * layout.h), layout.far, layout.near))


class ScriptedPerson:
    """A person whose walk-in, action and walk-out follow a script (used by events)."""

    def __init__(self, layout, fps, rng, y, target_x, direction, arrive_frame, speed=None):
        self.layout, self.fps = layout, fps
        self.y, self.direction = y, direction
        self.h = layout.person_height(y)
        self.speed = speed or rng.uniform(1.1, 1.6)
        self.step = layout.step(y, self.speed, fps)
        margin = 0.4 * self.h
        edge = -margin if direction > 0 else layout.w + margin
        walk_frames = abs(target_x - edge) / self.step
        self.appear = int(arrive_frame - walk_frames)
        self.x0 = edge
        self.colours = _person_colours(rng)
        self.phase = rng.uniform(0, 6.28)
        self.x = edge

    def walk(self, img, speed_factor=1.0, cadence=1.0, swing_amp=0.38, lean=0.0):
        self.x += self.direction * self.step * speed_factor
        self.phase += 2 * math.pi * cadence / self.fps
        s = swing_amp * math.sin(self.phase)
        return draw_person(img, self.x, self.y, self.h, self.colours, self.direction,
                           legs=(s, -s), arms=(-0.8 * s, 0.8 * s), lean=lean)

    def stand(self, img, **pose):
        return draw_person(img, self.x, self.y, self.h, self.colours, self.direction, **pose)

    def off_screen(self) -> bool:
        return self.x < -self.h or self.x > self.layout.w + self.h


class PersonEvent(Event):
    """Events played by one walking person who does something at (x, y) at `start`."""

    def __init__(self, *args):
        super().__init__(*args)
        lay, rng = self.layout, self.rng
        self.y = _place_row(lay, rng, self.scale)
        self.x = rng.uniform(0.15, 0.85) * lay.w
        direction = 1 if rng.random() < 0.5 else -1
        self.actor = ScriptedPerson(lay, self.fps, rng, self.y, self.x, direction, self.start)
        if self.actor.appear < 0:   # not enough time to walk in: start at the nearest edge instead
            self.x = self.actor.x0 + direction * self.actor.step * self.start
            self.actor = ScriptedPerson(lay, self.fps, rng, self.y, self.x, direction, self.start)

    def spawn_frame(self) -> int:
        return max(0, self.actor.appear)


class Run(PersonEvent):
    kind = "run"

    def __init__(self, *args):
        super().__init__(*args)
        self.run_speed = self.rng.uniform(3.5, 6.0) / self.actor.speed
        self.cadence = self.rng.uniform(1.5, 1.9)
        self.max_frames = int(self.rng.uniform(3, 6) * self.fps)

    def draw(self, img, i):
        a = self.actor
        if i < self.start:
            box = a.walk(img)
            return [Part(box, False)] if box else []
        t = i - self.start
        ramp = min(1.0, t / (0.4 * self.fps))     # accelerates over 0.4 s
        box = a.walk(img, speed_factor=1 + (self.run_speed - 1) * ramp, cadence=0.9 + (self.cadence - 0.9) * ramp,
                     swing_amp=0.38 + 0.4 * ramp, lean=0.25 * ramp)
        if a.off_screen() or t > self.max_frames:
            self.done = True
        return [Part(box, True)] if box else []


class Fall(PersonEvent):
    kind = "fall"

    def __init__(self, *args):
        super().__init__(*args)
        f = self.fps
        self.fall_frames = max(2, int(self.rng.uniform(0.5, 0.9) * f))
        self.lie_frames = int(self.rng.uniform(2.0, 4.5) * f)
        self.rise_frames = int(self.rng.uniform(1.0, 2.0) * f)

    def draw(self, img, i):
        a = self.actor
        t = i - self.start
        if t < 0 or t >= self.fall_frames + self.lie_frames + self.rise_frames:
            box = a.walk(img)
            if t > 0 and a.off_screen():
                self.done = True
            return [Part(box, False)] if box else []
        rng = self.rng
        if t < self.fall_frames:                       # toppling forward, arms flung out
            u = (t + 1) / self.fall_frames
            angle = (math.pi / 2 - 0.1) * u * u
            box = a.stand(img, angle=angle, legs=(0.3 * u, -0.2 * u), arms=(2.0 * u, 2.6 * u))
            a.x += a.direction * a.step * 0.5
        elif t < self.fall_frames + self.lie_frames:   # on the ground, struggling
            tw = rng.normal(0, 0.35, 4)
            box = a.stand(img, angle=math.pi / 2 - 0.1 + 0.05 * tw[0], legs=(0.3 + tw[1], -0.2 + tw[2]),
                          arms=(2.2 + tw[3], 1.4 - tw[3]))
        else:                                          # getting up
            u = (t - self.fall_frames - self.lie_frames + 1) / self.rise_frames
            box = a.stand(img, angle=(math.pi / 2 - 0.1) * (1 - u), legs=(0.6 * (1 - u), -0.3 * (1 - u)),
                          arms=(1.5 * (1 - u), 0.8 * (1 - u)), lean=0.5 * (1 - u))
        return [Part(box, True)] if box else []


class Throw(PersonEvent):
    kind = "throw"

    def __init__(self, *args):
        super().__init__(*args)
        rng, f, a = self.rng, self.fps, self.actor
        self.windup = max(2, int(0.4 * f))
        self.flight = max(3, int(rng.uniform(0.8, 1.4) * f))
        self.settle = int(0.6 * f)
        # The object lands a few metres away on the ground, forwards, a little up or down the scene.
        self.land = (self.x + a.direction * rng.uniform(2, 5) * a.h, float(np.clip(
            self.y + rng.uniform(-1.0, 1.0) * a.h, self.layout.far, self.layout.near)))
        self.peak = rng.uniform(1.0, 2.5) * a.h
        self.colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        self.obj_r = max(2, int(0.1 * a.h * max(1.0, self.scale)))   # a bottle, a stone, a bag

    def draw(self, img, i):
        a = self.actor
        t = i - self.start
        end = self.windup + self.flight + self.settle
        if t < 0:
            box = a.walk(img)
            return [Part(box, False)] if box else []
        if t >= end:
            box = a.walk(img) if t >= end + self.fps else a.stand(img)
            parts = [Part(box, False)] if box else []
            lx, ly = self.land
            obox = _clip_box(lx - self.obj_r - 1, ly - self.obj_r - 1, lx + self.obj_r + 1, ly + self.obj_r + 1, img.shape)
            if not a.off_screen():
                cv2.circle(img, (int(lx), int(ly)), self.obj_r, self.colour, -1, cv2.LINE_AA)
                parts += [Part(obox, False)] if obox else []
            else:
                self.done = True
            return parts
        if t < self.windup:
            u = (t + 1) / self.windup
            box = a.stand(img, arms=(-2.4 * u, 0.2), lean=-0.15 * u)
            hand = (a.x - a.direction * 0.25 * a.h * u, a.y - 0.95 * a.h)
        else:
            box = a.stand(img, arms=(1.6, 0.3), lean=0.2)
            u = min(1.0, (t - self.windup + 1) / self.flight)
            sx, sy = a.x + a.direction * 0.2 * a.h, a.y - 0.9 * a.h
            lx, ly = self.land
            hand = (sx + (lx - sx) * u, sy + (ly - sy) * u - self.peak * 4 * u * (1 - u))
            if t >= self.windup + self.flight:   # bouncing where it landed
                hand = (lx, ly - 0.2 * a.h * abs(math.sin(3 * (t - self.windup - self.flight) / self.fps * math.pi)))
        hx, hy = hand
        cv2.circle(img, (int(hx), int(hy)), self.obj_r, self.colour, -1, cv2.LINE_AA)
        obox = _clip_box(hx - self.obj_r - 1, hy - self.obj_r - 1, hx + self.obj_r + 1, hy + self.obj_r + 1, img.shape)
        return [Part(b, True) for b in (box, obox) if b]


class Fight(Event):
    kind = "fight"

    def __init__(self, *args):
        super().__init__(*args)
        lay, rng = self.layout, self.rng
        self.y = _place_row(lay, rng, self.scale)
        self.x = rng.uniform(0.2, 0.8) * lay.w
        h = lay.person_height(self.y)
        self.people = [ScriptedPerson(lay, self.fps, rng, self.y, self.x - d * 0.22 * h, d, self.start)
                       for d in (1, -1)]
        if min(p.appear for p in self.people) < 0:   # no time to walk in: they start near the middle
            for p in self.people:
                p.appear = 0
                p.x = self.x - p.direction * (0.22 * h + p.step * self.start)
        self.fight_frames = int(rng.uniform(3.0, 6.0) * self.fps)

    def spawn_frame(self):
        return max(0, min(p.appear for p in self.people))

    def draw(self, img, i):
        t = i - self.start
        parts = []
        for k, p in enumerate(self.people):
            if i < p.appear:
                continue
            if t < 0:
                if abs(p.x - (self.x - p.direction * 0.22 * p.h)) > p.step:
                    box = p.walk(img)
                else:
                    box = p.stand(img)
                anomalous = False
            elif t < self.fight_frames:
                # Lunges, blows, kicks and hops: vigorous, erratic, in place -- unlike people passing.
                r = self.rng.normal(0, 1, 6)
                p.x += 0.08 * p.h * r[0]
                p.x = float(np.clip(p.x, self.x - 0.45 * p.h, self.x + 0.45 * p.h))
                box = draw_person(img, p.x, p.y - 0.06 * p.h * abs(r[5]), p.h, p.colours, p.direction,
                                  arms=(1.6 + 1.2 * r[1], 1.2 + 1.2 * r[2]), legs=(0.4 * r[3], 0.4 * r[4]),
                                  lean=0.25 + 0.3 * r[3])
                anomalous = True
            else:
                p.direction = -p.direction if t == self.fight_frames else p.direction
                box = p.walk(img, speed_factor=1.3, cadence=1.2)
                anomalous = False
            if box:
                parts.append(Part(box, anomalous))
        if t > self.fight_frames and all(p.off_screen() for p in self.people):
            self.done = True
        return parts


class Flash(Event):
    kind = "flash"

    def __init__(self, *args):
        super().__init__(*args)
        lay, rng = self.layout, self.rng
        self.y = _place_row(lay, rng, self.scale / 1.2)
        self.x = rng.uniform(0.1, 0.9) * lay.w
        self.r = max(4.0, 0.5 * lay.person_height(self.y) * self.scale * rng.uniform(0.8, 1.3))
        self.frames = int(rng.uniform(1.5, 3.0) * self.fps)
        self.tint = np.array([rng.uniform(0.7, 1.0), rng.uniform(0.85, 1.0), 1.0], np.float32)
        size = int(2 * self.r) | 1
        g = cv2.getGaussianKernel(size, self.r / 2.2)
        self.kernel = (g @ g.T / (g @ g.T).max()).astype(np.float32)[..., None] * self.tint

    def draw(self, img, i):
        t = i - self.start
        if t >= self.frames:
            self.done = True
            return []
        level = 255 * self.rng.uniform(0.5, 1.0)
        jitter = self.rng.normal(0, 0.15 * self.r, 2)
        box = _add_light(img, self.x + jitter[0], self.y - 0.4 * self.r + jitter[1], self.kernel * level)
        return [Part(box, True)] if box else []


def _add_light(img, cx, cy, light: np.ndarray):
    """Add a light pattern [k, k, 3] (float, 0-255) centred on (cx, cy); returns its box."""
    k = light.shape[0]
    x0, y0 = int(cx) - k // 2, int(cy) - k // 2
    box = _clip_box(x0, y0, x0 + k - 1, y0 + k - 1, img.shape)
    if box is None:
        return None
    bx0, by0, bx1, by1 = box
    patch = light[by0 - y0:by1 - y0 + 1, bx0 - x0:bx1 - x0 + 1]
    roi = img[by0:by1 + 1, bx0:bx1 + 1]
    roi[:] = np.clip(roi + patch, 0, 255).astype(np.uint8)
    return box


class Fire(Event):
    kind = "fire"

    def __init__(self, *args):
        super().__init__(*args)
        lay, rng = self.layout, self.rng
        self.y = _place_row(lay, rng, self.scale / 1.2)
        self.x = rng.uniform(0.1, 0.9) * lay.w
        self.r = max(3.0, 0.35 * lay.person_height(self.y) * self.scale * rng.uniform(0.8, 1.4))
        self.frames = int(rng.uniform(4.0, 8.0) * self.fps)

    def draw(self, img, i):
        t = i - self.start
        if t >= self.frames:
            self.done = True
            return []
        rng, r = self.rng, self.r
        grow = min(1.0, (t + 1) / (0.6 * self.fps), (self.frames - t) / (0.6 * self.fps))
        xs, ys = [], []
        # Smoke puffs rising, then flames: several flickering tongues, red outside, yellow inside.
        for k in range(3):
            rise = ((t / self.fps * 0.8 + k / 3) % 1.0)
            sx = self.x + rng.normal(0, 0.1 * r) + 0.3 * r * math.sin(k + t / self.fps)
            sy = self.y - r * (1.0 + 2.5 * rise) * grow
            sr = max(1, int(r * (0.4 + 0.6 * rise) * grow))
            grey = int(70 + 60 * rise)
            cv2.circle(img, (int(sx), int(sy)), sr, (grey, grey, grey), -1, cv2.LINE_AA)
            xs += [sx - sr, sx + sr]
            ys += [sy - sr, sy + sr]
        for colour, frac in (((20, 60, 230), 1.0), ((40, 160, 250), 0.65), ((160, 240, 255), 0.35)):
            for _ in range(3):
                fx = self.x + rng.normal(0, 0.25 * r * frac)
                fh = r * frac * grow * rng.uniform(1.2, 2.0)
                fw = r * frac * grow * rng.uniform(0.4, 0.7)
                cv2.ellipse(img, (int(fx), int(self.y - fh / 2)), (max(1, int(fw)), max(1, int(fh / 2))),
                            rng.normal(0, 8), 0, 360, colour, -1, cv2.LINE_AA)
                xs += [fx - fw, fx + fw]
                ys += [self.y - fh, self.y]
        box = _clip_box(min(xs) - 2, min(ys) - 2, max(xs) + 2, max(ys) + 2, img.shape)
        return [Part(box, True)] if box else []


class Vehicle(Event):
    kind = "vehicle"

    def __init__(self, *args):
        super().__init__(*args)
        lay, rng = self.layout, self.rng
        self.y = _place_row(lay, rng, self.scale)
        self.h = lay.person_height(self.y)
        self.car = rng.random() < 0.6
        self.length = self.h * (rng.uniform(2.3, 3.0) if self.car else rng.uniform(1.1, 1.4))
        self.height = self.h * (rng.uniform(0.8, 1.0) if self.car else 0.75)
        self.direction = 1 if rng.random() < 0.5 else -1
        speed = rng.uniform(3.5, 6.0) if self.car else rng.uniform(5.0, 8.0)
        self.step = lay.step(self.y, speed, self.fps)
        self.x = -self.length if self.direction > 0 else lay.w + self.length   # front bumper
        self.colour = tuple(int(c) for c in rng.integers(20, 235, 3))
        self.rider = _person_colours(rng)

    def draw(self, img, i):
        self.x += self.direction * self.step
        L, H, d = self.length, self.height, self.direction
        back = self.x - d * L
        x0, x1 = min(back, self.x), max(back, self.x)
        y1 = self.y
        wheel = max(1, int(0.14 * self.h))
        if self.car:
            cv2.rectangle(img, (int(x0), int(y1 - 0.55 * H)), (int(x1), int(y1 - wheel)), self.colour, -1, cv2.LINE_AA)
            cx0, cx1 = x0 + 0.25 * L, x1 - 0.25 * L
            cv2.rectangle(img, (int(cx0), int(y1 - H)), (int(cx1), int(y1 - 0.55 * H)), self.colour, -1, cv2.LINE_AA)
            cv2.rectangle(img, (int(cx0 + 0.05 * L), int(y1 - 0.93 * H)), (int(cx1 - 0.05 * L), int(y1 - 0.6 * H)),
                          (90, 70, 60), -1, cv2.LINE_AA)
            wheels = (x0 + 0.2 * L, x1 - 0.2 * L)
        else:
            cv2.line(img, (int(x0 + wheel), int(y1 - wheel)), (int(x1 - wheel), int(y1 - 1.5 * wheel)),
                     self.colour, max(1, int(0.2 * self.h)), cv2.LINE_AA)
            draw_person(img, (x0 + x1) / 2, y1 - 0.35 * self.h, 0.8 * self.h, self.rider, d,
                        legs=(0.9, 0.6), arms=(1.2, 1.1), lean=0.3)
            wheels = (x0 + wheel, x1 - wheel)
        for wx in wheels:
            cv2.circle(img, (int(wx), int(y1 - wheel)), wheel, (25, 25, 25), -1, cv2.LINE_AA)
        box = _clip_box(x0 - 2, y1 - 1.15 * H - 2, x1 + 2, y1 + 2, img.shape)
        if (d > 0 and back > self.layout.w) or (d < 0 and back < 0):
            self.done = True
        return [Part(box, True)] if box else []


EVENT_TYPES = {cls.kind: cls for cls in (Run, Fall, Fight, Flash, Fire, Throw, Vehicle)}


# --------------------------------------------------------------------------------------
# The camera.

class SyntheticCamera:
    """A live synthetic surveillance camera. `read()` returns (ok, BGR uint8 [H, W, 3]) like
    cv2.VideoCapture; frames are a pure function of the seed and the frame index (pacing
    to real time only waits), so a recording can be regenerated exactly."""

    def __init__(self, config: SyntheticConfig | None = None, keep_ground_truth: bool = True, **overrides):
        cfg = config or SyntheticConfig()
        if overrides:
            cfg = SyntheticConfig(**{**asdict(cfg), **overrides})
        self.config = cfg.validate()
        streams = np.random.SeedSequence(cfg.seed).spawn(5)
        scene_rng, self._walk_rng, self._event_rng, self._noise_rng, light_rng = map(np.random.default_rng, streams)
        self.layout = Layout(cfg.width, cfg.height, scene_rng)
        self.background, self.trees = _background(self.layout, scene_rng)
        self._walkways = sorted(scene_rng.uniform(self.layout.far, self.layout.near, int(scene_rng.integers(3, 6))))
        self._light = {"phase": light_rng.uniform(0, 6.28, 3), "period": light_rng.uniform([60, 17, 150], [120, 31, 260]),
                       "cloud_y": light_rng.uniform(0, cfg.height), "cloud_r": light_rng.uniform(0.4, 0.8) * cfg.width}
        noise_sigma = scene_rng.uniform(2.0, 4.0)
        bank = self._noise_rng.normal(0, noise_sigma, (cfg.height + NOISE_PAD, cfg.width + NOISE_PAD, 3))
        self._noise_pos = np.clip(bank, 0, 255).astype(np.uint8)
        self._noise_neg = np.clip(-bank, 0, 255).astype(np.uint8)
        self._cloud_small = None
        self.fps = float(cfg.fps)
        self.frame_size = (cfg.width, cfg.height)
        self.frame_index = 0
        self.frame_count = None if cfg.duration is None else int(round(cfg.duration * cfg.fps))
        self.walkers: list[Walker] = []
        # Frames a passer-by spends in view, on average over the walkways (nearer is faster).
        self._crossing_frames = float(np.mean([cfg.width / self.layout.step(y, 1.35, self.fps) for y in self._walkways]))
        for _ in range(int(round(cfg.people))):   # start with people already in view
            self.walkers.append(Walker(self.layout, self.fps, self._walk_rng, self._walkway_row(),
                                       x=self._walk_rng.uniform(0, cfg.width)))
        # A live camera (keep_ground_truth=False) runs for days: it keeps no per-frame labels,
        # boxes or finished events, so its memory stays flat; recordings keep them all.
        self.keep_ground_truth = keep_ground_truth
        self._pending: list[Event] = []
        self.events: list[Event] = []
        self._event_count = 0   # events planned so far: their ids
        self._active: list[Event] = []
        self._next_start = self._first_start()
        self._labels = bytearray()
        self._boxes: dict[int, list] = {}
        self._t0: float | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, realtime: bool | None = None, keep_ground_truth: bool = True) -> "SyntheticCamera":
        config = SyntheticConfig.from_url(url)
        if realtime is not None:
            config.realtime = realtime
        return cls(config, keep_ground_truth=keep_ground_truth)

    # -- cv2.VideoCapture-like surface -----------------------------------------------
    def isOpened(self) -> bool:
        return not self._closed

    def release(self) -> None:
        self._closed = True

    close = release

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_WIDTH: float(self.frame_size[0]),
                cv2.CAP_PROP_FRAME_HEIGHT: float(self.frame_size[1]), cv2.CAP_PROP_POS_FRAMES: float(self.frame_index),
                cv2.CAP_PROP_FRAME_COUNT: float(self.frame_count or -1)}.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._closed or (self.frame_count is not None and self.frame_index >= self.frame_count):
            return False, None
        if self.config.realtime:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            due = self._t0 + self.frame_index / self.fps
            if due > now:
                time.sleep(due - now)
            elif now - due > 1.0:     # a reader that fell far behind restarts the clock, as a camera would drop frames
                self._t0 = now - self.frame_index / self.fps
        frame = self._render()
        return True, frame

    def __iter__(self):
        while True:
            ok, frame = self.read()
            if not ok:
                return
            yield frame

    # -- ground truth -------------------------------------------------------------------
    @property
    def ground_truth(self) -> np.ndarray:
        """uint8 [frames read so far]: 1 where an anomalous event part was drawn."""
        self._need_ground_truth()
        return np.frombuffer(bytes(self._labels), dtype=np.uint8).copy()

    def boxes(self, i: int) -> list[dict]:
        """The event parts drawn in frame i: kind, event id, box (x0, y0, x1, y1), anomalous."""
        self._need_ground_truth()
        return list(self._boxes.get(i, []))

    def event_summaries(self) -> list[dict]:
        self._need_ground_truth()
        return [e.summary() for e in self.events if e.first_anomalous is not None]

    def write_ground_truth(self, stem: str | Path) -> tuple[Path, Path]:
        """`<stem>_gt.npy` (uint8 per frame) and `<stem>_events.json` (events and per-frame boxes)."""
        stem = Path(stem)
        gt_path = stem.with_name(stem.name + "_gt.npy")
        ev_path = stem.with_name(stem.name + "_events.json")
        np.save(gt_path, self.ground_truth)
        ev_path.write_text(json.dumps({
            "url": self.config.to_url(), "fps": self.fps, "frame_size": list(self.frame_size),
            "frames": self.frame_index, "events": self.event_summaries(),
            "boxes": {str(i): b for i, b in sorted(self._boxes.items())}}, indent=1) + "\n")
        return gt_path, ev_path

    def _need_ground_truth(self) -> None:
        if not self.keep_ground_truth:
            raise RuntimeError("this synthetic camera keeps no ground truth (made with keep_ground_truth=False)")

    # -- rendering -----------------------------------------------------------------------
    def _walkway_row(self) -> float:
        y = self._walk_rng.choice(self._walkways)
        return float(np.clip(y + self._walk_rng.normal(0, 0.02 * self.config.height), self.layout.far, self.layout.near))

    def _first_start(self) -> int:
        cfg = self.config
        if cfg.rate <= 0:
            return -1
        if cfg.first is not None:
            return int(round(cfg.first * cfg.fps))
        return int(self._event_rng.exponential(60.0 / cfg.rate) * cfg.fps) + int(2 * cfg.fps)

    def _plan_events(self) -> None:
        """Create events whose actors must appear by now (they are planned ahead so that
        someone can walk in before doing something at the drawn time)."""
        cfg, rng = self.config, self._event_rng
        horizon = self.frame_index + int(30 * cfg.fps)   # actors walk in at most ~30 s ahead
        while self._next_start >= 0 and self._next_start <= horizon:
            kind = cfg.kinds[int(rng.integers(len(cfg.kinds)))]
            scale = float(np.clip(cfg.size * rng.lognormal(0.0, 0.3) * (2.2 if rng.random() < 0.15 else 1.0), 0.3, 4.0))
            event = EVENT_TYPES[kind](self._event_count, self.layout, self.fps,
                                      np.random.default_rng(rng.integers(1 << 62)), scale, self._next_start)
            self._event_count += 1
            self._pending.append(event)
            # Anomalous parts do not overlap: a gap of at least MIN_GAP, `rate` per minute on average.
            gap = (MIN_GAP + rng.exponential(max(60.0 / cfg.rate - MIN_GAP, 1.0))) * cfg.fps
            self._next_start += int(gap)
        still = []
        for e in self._pending:
            if e.spawn_frame() <= self.frame_index:
                if self.keep_ground_truth:
                    self.events.append(e)
                self._active.append(e)
            else:
                still.append(e)
        self._pending = still

    def _lighting(self, t: float) -> np.ndarray | float:
        L = self._light
        gain = 1.0 + 0.07 * math.sin(2 * math.pi * t / L["period"][0] + L["phase"][0]) \
                   + 0.02 * math.sin(2 * math.pi * t / L["period"][1] + L["phase"][1])
        # A cloud shadow drifts across once per period: a soft dark disc, computed small.
        w, h = self.frame_size
        u = ((t / L["period"][2] + L["phase"][2] / 6.28) % 1.0) * 2.0 - 0.5   # -0.5 .. 1.5 frame widths
        sw, sh = max(8, w // 16), max(6, h // 16)
        if self._cloud_small is None:
            self._cloud_grid = np.mgrid[0:sh, 0:sw].astype(np.float32)
        yy, xx = self._cloud_grid
        cx, cy, r = u * sw, L["cloud_y"] / h * sh, L["cloud_r"] / w * sw
        shade = 1.0 - 0.12 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r)))
        self._cloud_small = np.repeat((shade * gain * 128).astype(np.float32)[..., None], 3, axis=2)
        return cv2.resize(self._cloud_small, (w, h), interpolation=cv2.INTER_LINEAR)

    def _render(self) -> np.ndarray:
        cfg, i = self.config, self.frame_index
        t = i / self.fps
        img = self.background.copy()
        for tree in self.trees:   # crowns sway in the wind: normal local motion
            sway = 0.06 * tree["r"] * math.sin(2 * math.pi * t / 3.1 + tree["phase"])
            for dx, dy, rr in ((-0.4, 0.1, 0.7), (0.4, 0.1, 0.7), (0.0, -0.3, 0.8)):
                cv2.circle(img, (int(tree["x"] + tree["r"] * dx + sway), int(tree["y"] + tree["r"] * dy)),
                           max(1, int(tree["r"] * rr)), tree["colour"], -1, cv2.LINE_AA)
        # Normal crowd, drawn far to near.
        self.walkers = [w for w in self.walkers if not w.gone]
        spawn_p = cfg.people / self._crossing_frames   # arrivals = people in view / time in view
        if self._walk_rng.random() < spawn_p:
            self.walkers.append(Walker(self.layout, self.fps, self._walk_rng, self._walkway_row()))
        for w in sorted(self.walkers, key=lambda w: w.y):
            w.step_draw(img)
        # Events.
        self._plan_events()
        drawn = []
        for e in self._active:
            parts = e.draw(img, i)
            e.record(i, parts)
            drawn += [{"event": e.id, "kind": e.kind, "box": list(p.box), "anomalous": p.anomalous} for p in parts]
        self._active = [e for e in self._active if not e.done]
        if self.keep_ground_truth:
            if drawn:
                self._boxes[i] = drawn
            self._labels.append(1 if any(d["anomalous"] for d in drawn) else 0)
        # Lighting, then sensor noise from a random window of the noise bank.
        gain = self._lighting(t)
        img = cv2.multiply(img, gain, scale=1 / 128, dtype=cv2.CV_8U)
        ox, oy = (int(v) for v in self._noise_rng.integers(0, NOISE_PAD, 2))
        h, w = img.shape[:2]
        cv2.add(img, self._noise_pos[oy:oy + h, ox:ox + w], dst=img)
        ox, oy = (int(v) for v in self._noise_rng.integers(0, NOISE_PAD, 2))
        cv2.subtract(img, self._noise_neg[oy:oy + h, ox:ox + w], dst=img)
        self.frame_index += 1
        return img


def render(url_or_config, frames: int) -> tuple[np.ndarray, SyntheticCamera]:
    """Render `frames` frames as fast as possible: ([N, H, W, 3] uint8, the camera with its
    ground truth)."""
    config = url_or_config if isinstance(url_or_config, SyntheticConfig) else SyntheticConfig.from_url(url_or_config)
    cam = SyntheticCamera(config, realtime=False)
    out = np.empty((frames, cam.config.height, cam.config.width, 3), np.uint8)
    for k in range(frames):
        ok, frame = cam.read()
        if not ok:
            return out[:k], cam
        out[k] = frame
    return out, cam


def record(url: str, path: str | Path, seconds: float) -> tuple[Path, Path, Path]:
    """Write `seconds` of the camera to a video file (mp4v or MJPG by extension) with its
    ground truth beside it: `<stem>_gt.npy`, `<stem>_events.json`."""
    path = Path(path)
    cam = SyntheticCamera.from_url(url, realtime=False)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, cam.fps, cam.frame_size)
    if not writer.isOpened():
        raise SyntheticError(f"{path}: OpenCV cannot write this video format")
    try:
        for _ in range(int(round(seconds * cam.fps))):
            ok, frame = cam.read()
            if not ok:
                break
            writer.write(frame)
    finally:
        writer.release()
    gt, events = cam.write_ground_truth(path.with_suffix(""))
    return path, gt, events


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m monitor.video.synthetic",
                                description="Record the synthetic camera to a video with its frame ground truth.")
    p.add_argument("--url", default=DEFAULT_URL, help=f"synthetic:// URL (default {DEFAULT_URL})")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--out", type=Path, required=True, help="video file to write (.mp4 or .avi)")
    args = p.parse_args(argv)
    try:
        video, gt, events = record(args.url, args.out, args.seconds)
    except SyntheticError as exc:
        print(f"error: {exc}")
        return 2
    labels = np.load(gt)
    print(f"wrote {video} ({len(labels)} frames, {int(labels.sum())} anomalous), {gt}, {events}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
