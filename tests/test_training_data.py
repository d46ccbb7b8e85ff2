"""Feature sets in the published layout: lists and labels, 32-segment resampling, both file
layouts, patch companions, and errors that name the bad file."""
from pathlib import Path

import numpy as np
import pytest

from training.data import (FeatureReader, FeatureSetError, FeatureSpec, ShardedOrder, check_files, hold_out,
                           read_list, resample_segments)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
F = 16


def spec(crops=2, grids=(), layout="auto", **kw):
    return FeatureSpec(crops=crops, feature_size=F, grids=tuple(grids), packed_grids=(23, 35, 47),
                       layout=layout, **kw)


def video(t, rows, seed=0):
    return np.random.default_rng(seed).random((t, rows, F), dtype=np.float32)


# -- resampling ------------------------------------------------------------------------------

def test_resampling_by_hand():
    x = np.arange(6, dtype=np.float32)[:, None]     # snippets 0..5
    # linspace(0, 6, 5) = 0, 1.5, 3, 4.5, 6 -> 0, 1, 3, 4, 6: segments {0}, {1, 2}, {3}, {4, 5}
    assert resample_segments(x, 4)[:, 0].tolist() == [0.0, 1.5, 3.0, 4.5]
    # Fewer snippets than segments: an empty segment takes the snippet at its boundary.
    # linspace(0, 2, 5) = 0, .5, 1, 1.5, 2 -> 0, 0, 1, 1, 2: {} -> x0, {0}, {} -> x1, {1}
    y = np.array([[10.0], [20.0]], dtype=np.float32)
    assert resample_segments(y, 4)[:, 0].tolist() == [10.0, 10.0, 20.0, 20.0]


def test_resampling_32_segments_of_32_snippets_is_the_identity_and_keeps_trailing_axes():
    x = video(32, 3)
    np.testing.assert_array_equal(resample_segments(x), x)
    r = resample_segments(video(100, 3, seed=1))
    assert r.shape == (32, 3, F) and r.dtype == np.float32
    # 100 snippets: the first segment is snippets 0..2 (linspace step 3.125).
    np.testing.assert_allclose(r[0], video(100, 3, seed=1)[:3].mean(0), rtol=1e-6)


# -- lists and labels ------------------------------------------------------------------------

def test_published_lists_with_their_presets():
    sh = read_list(REFERENCE / "shanghai-train.list", "/data/SH", "shanghai")
    assert len(sh) == 238 and sum(e.label for e in sh) == 63
    assert sh[0].path == Path("/data/SH/01_0014_i3d.npy") and sh[0].label == 1
    assert sh[62].label == 1 and sh[63].label == 0
    ucf = read_list(REFERENCE / "ucf-train.list", "/data/UCF", "ucf")
    assert sum(e.label for e in ucf) == 810 and len(ucf) - 810 == 800
    assert ucf[809].name == "Vandalism050_x264_i3d.npy" and ucf[810].name.startswith("Normal_Videos")
    test = read_list(REFERENCE / "shanghai-test.list", "/data/SH", need_labels=False)
    assert len(test) == 199 and test[0].label is None


def test_labels_from_the_list_and_errors_with_line_numbers(tmp_path):
    lst = tmp_path / "mine.list"
    lst.write_text("a_i3d.npy,1\n\n# a comment\nsub/b_i3d.npy, normal\n/abs/c_i3d.npy,abnormal\n")
    entries = read_list(lst, tmp_path / "feats")
    assert [(e.path, e.label) for e in entries] == [(tmp_path / "feats/a_i3d.npy", 1),
                                                    (tmp_path / "feats/sub/b_i3d.npy", 0), (Path("/abs/c_i3d.npy"), 1)]
    assert entries[1].source == f"{lst}:4"
    assert read_list(lst)[0].path == tmp_path / "a_i3d.npy"      # default: names relative to the list
    lst.write_text("a_i3d.npy,1\nb_i3d.npy\n")
    with pytest.raises(FeatureSetError, match=r"mine.list:2: no label"):
        read_list(lst, tmp_path)
    lst.write_text("a_i3d.npy,1\nb_i3d.npy,maybe\n")
    with pytest.raises(FeatureSetError, match=r"mine.list:2: label 'maybe'"):
        read_list(lst, tmp_path)
    lst.write_text("a_i3d.npy,0\nb_i3d.npy\n")
    with pytest.raises(FeatureSetError, match=r"mine.list:1: the line says label 0 but preset '1' makes it 1"):
        read_list(lst, tmp_path, "1")
    lst.write_text("a_i3d.npy\nb_i3d.npy\n")
    with pytest.raises(FeatureSetError, match="first 63 videos abnormal but the list holds only 2"):
        read_list(lst, tmp_path, "shanghai")
    with pytest.raises(FeatureSetError, match="unknown label preset 'xd'"):
        read_list(lst, tmp_path, "xd")
    with pytest.raises(FeatureSetError, match="no such list file"):
        read_list(tmp_path / "absent.list")


def test_hold_out_is_stratified_seeded_and_disjoint(tmp_path):
    lst = tmp_path / "l.list"
    lst.write_text("".join(f"v{i}_i3d.npy\n" for i in range(30)))
    entries = read_list(lst, tmp_path, "10")
    train, val = hold_out(entries, 0.2, seed=5)
    assert sorted(e.label for e in val) == [0] * 4 + [1] * 2
    assert not {e.path for e in train} & {e.path for e in val} and len(train) + len(val) == 30
    assert [e.path for e in hold_out(entries, 0.2, seed=5)[1]] == [e.path for e in val]


def test_each_process_draws_its_own_shard():
    orders = [ShardedOrder(size=10, batch=2, seed=3, salt=0, rank=r, world=2) for r in range(2)]
    assert orders[0].batches == 2     # 5 videos per process, batches of 2, remainder dropped
    for step in (1, 2):
        a, b = orders[0].indices(step), orders[1].indices(step)
        assert len(a) == len(b) == 2 and not set(a) & set(b)
    epoch1 = [i for o in orders for s in (1, 2) for i in o.indices(s)]
    assert len(set(epoch1)) == 8
    assert orders[0].indices(3) != orders[0].indices(1) or orders[0].indices(4) != orders[0].indices(2)
    assert ShardedOrder(10, 2, 3, 0, 0, 2).indices(7) == orders[0].indices(7)   # a pure function of the step
    with pytest.raises(FeatureSetError, match="cannot fill a batch of 4 on each of 2"):
        ShardedOrder(size=5, batch=4, seed=0, salt=0, rank=0, world=2)


# -- layouts and companions --------------------------------------------------------------------

@pytest.fixture
def snippet_major(tmp_path):
    """One video in the published extraction layout: main [T, 2, F] + grid-23 and grid-35 companions."""
    main, p23, p35 = video(45, 2, 1), video(45, 6, 2), video(45, 15, 3)
    np.save(tmp_path / "v_i3d.npy", main)
    np.save(tmp_path / "v_patch23_i3d.npy", p23)
    np.save(tmp_path / "v_patch35_i3d.npy", p35)
    return tmp_path / "v_i3d.npy", main, p23, p35


def test_snippets_and_segments_from_main_file_and_companions(snippet_major):
    path, main, p23, p35 = snippet_major
    crops, patches = FeatureReader(spec(grids=(23, 35))).snippets(path)
    np.testing.assert_array_equal(crops, main)
    np.testing.assert_array_equal(patches, np.concatenate([p23, p35], axis=1))
    seg = FeatureReader(spec(grids=(23, 35))).segments(path)
    assert seg.shape == (2 + 6 + 15, 32, F) and seg.dtype == np.float32
    whole = np.concatenate([main, p23, p35], axis=1)
    np.testing.assert_allclose(seg, resample_segments(whole).transpose(1, 0, 2), rtol=1e-6)
    # Stage 1 reads the crops only, and needs no companion.
    assert FeatureReader(spec()).segments(path).shape == (2, 32, F)


def test_crop_major_and_packed_files_give_the_same_training_view(snippet_major, tmp_path):
    path, main, p23, p35 = snippet_major
    expected = FeatureReader(spec(grids=(23, 35))).segments(path)
    cm = tmp_path / "cm"
    cm.mkdir()
    np.save(cm / "v_i3d.npy", expected[:2])              # [crops, 32, F]
    np.save(cm / "v_patch23_i3d.npy", expected[2:8])      # [6, 32, F]
    np.save(cm / "v_patch35_i3d.npy", expected[8:])
    np.testing.assert_array_equal(FeatureReader(spec(grids=(23, 35))).segments(cm / "v_i3d.npy"), expected)
    packed = tmp_path / "packed"
    packed.mkdir()
    p47 = video(45, 28, 4)
    np.save(packed / "v_i3d.npy", np.concatenate([main, p23, p35, p47], axis=1))   # [T, 2 + 49, F]
    np.testing.assert_allclose(FeatureReader(spec(grids=(23, 35))).segments(packed / "v_i3d.npy"), expected, rtol=1e-6)
    crops, patches = FeatureReader(spec(grids=(23,))).snippets(packed / "v_i3d.npy")
    np.testing.assert_array_equal(crops, main)
    np.testing.assert_array_equal(patches, p23)
    with pytest.raises(FeatureSetError, match="crop-major segments .* a training layout"):
        FeatureReader(spec(grids=(23, 35))).snippets(cm / "v_i3d.npy")


def test_companions_in_patch_directories_and_aligned_as_published(tmp_path):
    main = video(20, 2)
    np.save(tmp_path / "v_i3d.npy", main)
    pdir = tmp_path / "PATCH23"
    pdir.mkdir()
    short = video(18, 6, 5)                 # two snippets short: the last row is repeated
    np.save(pdir / "v_patch23_i3d.npy", short)
    reader = FeatureReader(spec(grids=(23,), patch_dirs=(tmp_path / "PATCH{grid}",)))
    _, patches = reader.snippets(tmp_path / "v_i3d.npy")
    np.testing.assert_array_equal(patches, np.concatenate([short, short[-1:], short[-1:]]))
    np.save(pdir / "v_patch23_i3d.npy", video(23, 6, 5))   # three too many: cut
    _, patches = reader.snippets(tmp_path / "v_i3d.npy")
    np.testing.assert_array_equal(patches, video(23, 6, 5)[:20])


def test_single_crop_features_stored_2d():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        x = np.random.default_rng(0).random((40, F), dtype=np.float32)
        np.save(Path(d) / "v_i3d.npy", x)
        seg = FeatureReader(spec(crops=1)).segments(Path(d) / "v_i3d.npy")
        np.testing.assert_allclose(seg[0], resample_segments(x), rtol=1e-6)


# -- bad files are errors that name them -------------------------------------------------------------

def test_bad_files_are_named(snippet_major, tmp_path):
    path, main, p23, _ = snippet_major
    reader = FeatureReader(spec(grids=(23,)))
    with pytest.raises(FeatureSetError, match=r"absent_i3d\.npy: no such feature file"):
        reader.segments(tmp_path / "absent_i3d.npy")
    (tmp_path / "w_i3d.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(FeatureSetError, match=r"w_i3d\.npy: not a readable \.npy array"):
        reader.segments(tmp_path / "w_i3d.npy")
    np.save(tmp_path / "x_i3d.npy", video(10, 2)[..., :8])
    with pytest.raises(FeatureSetError, match=r"x_i3d\.npy: expected .* found \[10, 2, 8\]"):
        reader.segments(tmp_path / "x_i3d.npy")
    np.save(tmp_path / "y_i3d.npy", main)          # no companion for grid 23
    with pytest.raises(FeatureSetError, match=r"y_i3d\.npy: missing patch companion for grid 23 .*y_patch23_i3d\.npy"):
        reader.segments(tmp_path / "y_i3d.npy")
    np.save(tmp_path / "y_patch23_i3d.npy", video(45, 5))   # 5 patches, not 6
    with pytest.raises(FeatureSetError, match=r"y_patch23_i3d\.npy: expected \[T, 6, 16\]"):
        reader.segments(tmp_path / "y_i3d.npy")
    bad = main.copy()
    bad[3, 1, 2] = np.nan
    np.save(tmp_path / "z_i3d.npy", bad)
    np.save(tmp_path / "z_patch23_i3d.npy", p23)
    with pytest.raises(FeatureSetError, match=r"z_i3d\.npy: holds NaN or infinite values"):
        reader.segments(tmp_path / "z_i3d.npy")
    np.save(tmp_path / "i_i3d.npy", np.zeros((4, 2, F), dtype=np.int32))
    with pytest.raises(FeatureSetError, match=r"i_i3d\.npy: holds int32 values"):
        reader.segments(tmp_path / "i_i3d.npy")


def test_every_bad_file_of_a_list_is_reported_before_a_run(snippet_major, tmp_path):
    lst = tmp_path / "t.list"
    lst.write_text("v_i3d.npy,1\ngone_i3d.npy,0\nalso_gone_i3d.npy,0\n")
    entries = read_list(lst, tmp_path)
    with pytest.raises(FeatureSetError) as err:
        check_files(FeatureReader(spec(grids=(23, 35))), entries, "training")
    message = str(err.value)
    assert "2 bad training video(s)" in message
    assert "gone_i3d.npy: no such feature file" in message and f"[{lst}:2]" in message
    assert "also_gone_i3d.npy" in message and f"[{lst}:3]" in message
