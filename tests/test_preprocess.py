"""The one preprocessing path against SPEC §1: snippet count, RGB order, scaling, the ten crops
and their order, the patch grids, and both resize modes on real footage."""
import numpy as np
import pytest
from PIL import Image

import cv2
from monitor.model.manifest import Manifest
from monitor.video.preprocess import (Geometry, GeometryError, Preprocessor, fast_interpolation, grid_edges,
                                     resize_planes, scale, snippet_count, stacks_exactly)
from tests.i3d_helpers import SMALL, read_frames, sample_video

RNG = np.random.default_rng(0)


def spec_frames(width=340, height=256):
    """16 random BGR frames already at the frame size, so that no resize touches them."""
    return RNG.integers(0, 256, (16, height, width, 3), dtype=np.uint8)


def expected_scale(u8):
    return (u8.astype(np.float64) * 2 / 255 - 1).astype(np.float32)


@pytest.mark.parametrize("n,count", [(0, 0), (15, 0), (16, 1), (31, 1), (32, 2), (47, 2), (48, 3), (795, 49)])
def test_snippet_count_follows_spec(n, count):
    assert snippet_count(n) == count
    if n >= 16:
        assert count == (n - 16) // 16 + 1
    assert snippet_count(n, length=8) == ((n - 8) // 8 + 1 if n >= 8 else 0)


def test_scaling_is_x_times_2_over_255_minus_1_exactly():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    got = scale(values)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected_scale(values))
    assert got.min() == -1.0 and got.max() == 1.0


@pytest.mark.parametrize("resize", ["fast", "reference"])
def test_ten_crops_follow_spec_positions_and_order(resize):
    frames = spec_frames()
    crops = Preprocessor(Geometry(resize=resize, grids=())).crops(frames)
    assert crops.shape == (10, 3, 16, 224, 224) and crops.dtype == np.float32
    rgb = expected_scale(frames[..., ::-1]).transpose(3, 0, 1, 2)  # [3, 16, 256, 340]
    flipped = rgb[..., ::-1]
    # SPEC §1: top-left, top-right, centre (rows 16-239, columns 58-281), bottom-left,
    # bottom-right, then the same five on the horizontally flipped frames.
    boxes = [(slice(0, 224), slice(0, 224)), (slice(0, 224), slice(116, 340)), (slice(16, 240), slice(58, 282)),
             (slice(32, 256), slice(0, 224)), (slice(32, 256), slice(116, 340))]
    expected = [img[:, :, r, c] for img in (rgb, flipped) for r, c in boxes]
    for k, want in enumerate(expected):
        np.testing.assert_array_equal(crops[k], want, err_msg=f"crop {k}")
    # The flipped top-left crop is the mirror image of the unflipped top-right one.
    np.testing.assert_array_equal(crops[5], crops[1][..., ::-1])


def test_single_crop_is_the_centre_crop():
    frames = spec_frames()
    ten = Preprocessor(Geometry(grids=())).crops(frames)
    one = Preprocessor(Geometry(crops=1, grids=())).crops(frames)
    assert one.shape == (1, 3, 16, 224, 224)
    np.testing.assert_array_equal(one[0], ten[2])


def test_bgr_frames_become_rgb():
    blue_bgr = np.zeros((16, 256, 340, 3), np.uint8)
    blue_bgr[..., 0] = 255  # OpenCV's channel 0 is blue
    crops, patches = Preprocessor(Geometry(grids=(23,), patch_size=32)).snippet(blue_bgr)
    for clips in (crops, patches):
        np.testing.assert_array_equal(clips[:, 2], 1.0)   # RGB channel 2 = blue, full
        np.testing.assert_array_equal(clips[:, :2], -1.0)  # red and green empty


def test_bgr_to_rgb_on_real_footage(tmp_path):
    frames = read_frames(sample_video("vtest.avi", tmp_path), limit=16)
    pre = Preprocessor(Geometry(resize="fast", grids=()))
    rgb = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), (340, 256), interpolation=cv2.INTER_AREA)
                    for f in frames])
    np.testing.assert_array_equal(pre.resized(frames), rgb)
    np.testing.assert_array_equal(pre.crops(frames)[2], expected_scale(rgb[:, 16:240, 58:282]).transpose(3, 0, 1, 2))


def test_reference_resize_is_pillow_lanczos_on_the_rgb_frame(tmp_path):
    frames = read_frames(sample_video("vtest.avi", tmp_path), limit=16)
    got = Preprocessor(Geometry(resize="reference", grids=())).resized(frames)
    # The published pipeline: Image.open(frame).resize((340, 256), ANTIALIAS), ANTIALIAS = LANCZOS.
    want = np.stack([np.asarray(Image.fromarray(f[..., ::-1].copy()).resize((340, 256), Image.LANCZOS))
                     for f in frames])
    np.testing.assert_array_equal(got, want)


def test_fast_planar_resize_equals_opencv_on_interleaved_frames(tmp_path):
    frames = read_frames(sample_video("vtest.avi", tmp_path), limit=16)[..., ::-1]
    planes = frames.transpose(3, 0, 1, 2)
    for size, interp in (((340, 256), cv2.INTER_AREA), ((1000, 800), cv2.INTER_LINEAR)):
        want = np.stack([cv2.resize(np.ascontiguousarray(f), size, interpolation=interp) for f in frames])
        np.testing.assert_array_equal(resize_planes(planes, size, "fast"), want.transpose(3, 0, 1, 2))


def cell_labelled_frames(geometry, grid):
    """Frames whose pixels hold the row-major index of their cell in `grid` (x 7, to spread)."""
    w, h = geometry.frame_size
    r, c = grid // 10, grid % 10
    rows, cols = grid_edges(h, r), grid_edges(w, c)
    label = np.zeros((h, w), np.uint8)
    for i in range(r):
        for j in range(c):
            label[rows[i]:rows[i + 1], cols[j]:cols[j + 1]] = 7 * (i * c + j)
    return np.repeat(np.repeat(label[None, :, :, None], 16, 0), 3, 3)


@pytest.mark.parametrize("resize", ["fast", "reference"])
@pytest.mark.parametrize("geometry", [Geometry(patch_size=224), SMALL], ids=["published", "small"])
def test_patches_tile_the_resized_frame_row_major(geometry, resize):
    geometry = Geometry.from_dict(geometry.to_dict(), resize=resize)
    for grid in geometry.grids:
        frames = cell_labelled_frames(geometry, grid)
        patches = Preprocessor(Geometry.from_dict(geometry.to_dict(), grids=(grid,))).patches(frames)
        p = geometry.patch_size
        assert patches.shape == ((grid // 10) * (grid % 10), 3, 16, p, p)
        for k, patch in enumerate(patches):  # a constant cell resizes to a constant patch
            np.testing.assert_array_equal(patch, expected_scale(np.uint8(7 * k)), err_msg=f"grid {grid} patch {k}")


def test_patches_concatenate_grids_in_order_and_equal_resized_cells(tmp_path):
    frames = read_frames(sample_video("vtest.avi", tmp_path), limit=16)
    for resize in ("fast", "reference"):
        pre = Preprocessor(Geometry.from_dict(SMALL.to_dict(), resize=resize))
        crops, patches = pre.snippet(frames)
        assert patches.shape == (49, 3, 16, 16, 16)
        planes = pre.planes(frames)
        k = 0
        for grid in SMALL.grids:
            alone = Preprocessor(Geometry.from_dict(SMALL.to_dict(), resize=resize, grids=(grid,))).patches(frames)
            np.testing.assert_array_equal(patches[k:k + len(alone)], alone)
            top, bottom, left, right = SMALL.patch_boxes(grid)[-1]  # the bottom-right cell, resized alone
            cell = resize_planes(planes[:, :, top:bottom, left:right], (16, 16), resize)
            np.testing.assert_array_equal(patches[k + len(alone) - 1], expected_scale(cell))
            k += len(alone)


DEMO_GEOMETRY = Geometry(frame_size=(96, 96), crop_size=96, crops=1, patch_size=24)


@pytest.mark.parametrize("geometry", [DEMO_GEOMETRY, SMALL, Geometry(patch_size=56), Geometry(patch_size=224)],
                         ids=["demo", "small", "published-56", "published"])
def test_every_patch_equals_its_cell_resized_frame_by_frame(geometry, tmp_path):
    """The fast path resizes a cell's 16 frames in one call where that is exact; every patch of
    every grid must still be the cell of each frame resized alone, byte for byte."""
    frames = read_frames(sample_video("vtest.avi", tmp_path), limit=16)
    pre = Preprocessor(geometry)
    small = pre.small(frames)
    patches, p, k = pre.patch_pixels(small), geometry.patch_size, 0
    for grid in geometry.grids:
        for top, bottom, left, right in geometry.patch_boxes(grid):
            interpolation = fast_interpolation((bottom - top, right - left), (p, p))
            alone = np.stack([cv2.resize(np.ascontiguousarray(frame[top:bottom, left:right]), (p, p),
                                         interpolation=interpolation) for frame in small])
            np.testing.assert_array_equal(patches[k], alone, err_msg=f"grid {grid} patch {k}")
            k += 1
    assert k == len(patches)


def test_cells_stack_only_where_the_filter_stays_inside_each_frame():
    # The demo's cells are at least as tall as its 24-pixel patches: all of them stack.
    for box in [b for grid in DEMO_GEOMETRY.grids for b in DEMO_GEOMETRY.patch_boxes(grid)]:
        assert stacks_exactly((box[1] - box[0], box[3] - box[2]), 24, 16)
    # A cell shorter than its patch does not, and stacking it would indeed be wrong: bilinear
    # would blend the rows of neighbouring frames where a frame alone is clamped.
    cells = np.random.default_rng(3).integers(0, 256, (16, 12, 9, 3), dtype=np.uint8)
    tall = cv2.resize(cells.reshape(16 * 12, 9, 3), (16, 16 * 16), interpolation=cv2.INTER_LINEAR).reshape(16, 16, 16, 3)
    alone = np.stack([cv2.resize(cell, (16, 16), interpolation=cv2.INTER_LINEAR) for cell in cells])
    assert not np.array_equal(tall, alone)
    assert not stacks_exactly((12, 9), 16, 16)


def test_fast_and_reference_pixels_stay_close_on_real_footage(tmp_path):
    frames = read_frames(sample_video("vtest.avi", tmp_path), limit=16)
    geometry = Geometry(grids=(23, 35, 47))
    fast = Preprocessor(Geometry.from_dict(geometry.to_dict(), resize="fast")).snippet(frames)
    ref = Preprocessor(Geometry.from_dict(geometry.to_dict(), resize="reference")).snippet(frames)
    for name, a, b in (("crops", fast[0], ref[0]), ("patches", fast[1], ref[1])):
        diff = np.abs(a - b) * 127.5  # in 8-bit levels
        cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        print(f"\nvtest.avi {name}: fast vs reference mean |diff| {diff.mean():.2f} levels, "
              f"max {diff.max():.0f}, cosine {cosine:.5f}")
        assert diff.mean() < 4 and cosine > 0.99


def test_small_geometry_scales_everything():
    g = Geometry(frame_size=(128, 96), crop_size=64, patch_size=32)
    assert g.crop_boxes() == [(0, 0), (0, 64), (16, 32), (32, 0), (32, 64)]
    crops, patches = Preprocessor(g).snippet(RNG.integers(0, 256, (16, 50, 70, 3), dtype=np.uint8))
    assert crops.shape == (10, 3, 16, 64, 64) and patches.shape == (49, 3, 16, 32, 32)
    assert Preprocessor(Geometry(grids=())).snippet(spec_frames())[1] is None


def test_geometry_round_trips_through_the_manifest():
    g = Geometry(frame_size=(128, 96), crop_size=64, crops=1, grids=(23, 35), patch_size=32, resize="reference")
    d = g.to_dict()
    assert d["color"] == "RGB" and d["scale"] == [-1.0, 1.0] and d["patch_source"] == "resized_frame"
    assert Geometry.from_dict(d) == g
    manifest = Manifest(stage=2, grids=[23], crops=10, feature_size=64, graphs={}, preprocessing=d)
    # The manifest's own crops and grids win over those recorded in the preprocessing field.
    assert Geometry.from_manifest(manifest) == Geometry.from_dict(d, crops=10, grids=(23,))


@pytest.mark.parametrize("field,value,message", [
    ("resize", "bicubic", "'resize'"), ("crops", 5, "'crops'"), ("crop_size", 300, "'crop_size'"),
    ("frame_size", [340], "'frame_size'"), ("grids", [23, 5], "'grids'"), ("color", "BGR", "'color'"),
    ("scale", [0, 1], "'scale'"), ("patch_size", "224", "'patch_size'")])
def test_bad_geometry_is_refused_by_field(field, value, message):
    d = Geometry().to_dict()
    d[field] = value
    with pytest.raises(GeometryError, match=message):
        Geometry.from_dict(d)


def test_bad_frames_are_refused_with_the_reason():
    pre = Preprocessor(SMALL)
    with pytest.raises(ValueError, match=r"frames: expected \[16, H, W, 3\]"):
        pre.snippet(np.zeros((15, 48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        pre.snippet(np.zeros((16, 48, 64, 3), np.float32))
