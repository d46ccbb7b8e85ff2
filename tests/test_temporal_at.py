"""temporal_at, the temporal head at chosen positions of a window (what the live engine runs),
gives what the temporal head gives there; a bundle exported before it gets it back from its
temporal graph; a bundle without it is still scored alike."""
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from export.onnx_graphs import TemporalHead
from export.temporal_at import TemporalAt
from monitor.config import DEMO_BUNDLE
from monitor.engine import stream_scores
from monitor.model.bundle import Bundle
from tests.graph_faults import rehash
from tests.head_helpers import seeded_features, seeded_model
from training.checkpoint import save_checkpoint

LENGTHS = (1, 2, 3, 5, 6, 9, 32)  # shorter than, as long as and longer than the convolutions reach


def position_sets(t: int) -> list[list[int]]:
    return [[t - 1], [0], list(range(t)), sorted({0, t // 2, t - 1}), [t - 1, t - 1, 0]]


def test_the_head_at_chosen_positions_is_the_whole_head_there():
    model = seeded_model(1, feature_size=64, crops=3, seed=5)
    at, whole = TemporalAt(model), TemporalHead(model)
    rng = np.random.default_rng(2)
    with torch.no_grad():
        for t in LENGTHS:
            window = torch.from_numpy(rng.normal(0, 1.5, (2, t, 3, 64)).astype(np.float32))
            expected = whole(window)
            for positions in position_sets(t):
                got = at(window, torch.tensor(positions))
                assert got.shape == (2, len(positions))
                torch.testing.assert_close(got, expected[:, positions], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A stage-2 bundle exported from a checkpoint: temporal_at written beside temporal."""
    tmp = tmp_path_factory.mktemp("temporal_at")
    model = seeded_model(2, feature_size=32, crops=2, seed=7)
    save_checkpoint(model, tmp / "ckpt.pkl")
    out = tmp / "bundle"
    assert export_main(["--checkpoint", str(tmp / "ckpt.pkl"), "--out", str(out), "--crops", "2"]) == 0
    return out, model


def old_bundle(source, out):
    """A copy of `source` as bundles were before temporal_at existed."""
    shutil.copytree(source, out)
    (out / "temporal_at.onnx").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["graphs"]["temporal_at"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    rehash(out)
    return out


def test_the_exported_graph_scores_what_the_temporal_graph_scores(exported):
    bundle = Bundle(exported[0])
    assert bundle.has_temporal_at
    rng = np.random.default_rng(3)
    for t in LENGTHS:
        window = rng.normal(0, 1.5, (3, t, 2, 32)).astype(np.float32)
        whole = bundle.scores(window)
        for positions in position_sets(t):
            np.testing.assert_allclose(bundle.scores_at(window, positions), whole[:, positions], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="do not all lie in the window of 5"):
        bundle.scores_at(window[:, :5], [5])


def test_an_old_bundle_gets_temporal_at_read_back_from_its_temporal_graph(tmp_path, exported):
    source, model = exported
    old = old_bundle(source, tmp_path / "old")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    # Without the graph, the same scores come from the temporal graph at every position.
    plain = Bundle(old)
    assert not plain.has_temporal_at
    packed = seeded_features(model, 12, seed=9)
    crops, patches = packed[:, :2], packed[:, 2:]
    live = stream_scores(Bundle(source), crops, patches, window=5, lookahead=1)
    np.testing.assert_allclose(stream_scores(plain, crops, patches, window=5, lookahead=1), live, rtol=0, atol=1e-6)

    new = tmp_path / "new"
    assert export_main(["--bundle", str(old), "--temporal-at", "--out", str(new)]) == 0
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before  # the source is left as it is
    restored = Bundle(new)
    manifest = json.loads((new / "manifest.json").read_text())
    assert "temporal_at.onnx" in manifest["source"]["sha256"] and "read back" in manifest["source"]["temporal_at"]
    for name in ("temporal", "spatial"):
        assert (new / f"{name}.onnx").read_bytes() == (old / f"{name}.onnx").read_bytes()
    window = np.random.default_rng(4).normal(0, 1.5, (2, 9, 2, 32)).astype(np.float32)
    for positions in position_sets(9):
        np.testing.assert_allclose(restored.scores_at(window, positions), restored.scores(window)[:, positions],
                                   rtol=0, atol=1e-6)
    np.testing.assert_allclose(stream_scores(restored, crops, patches, window=5, lookahead=1), live, rtol=0, atol=1e-6)


def test_the_shipped_demo_bundle_has_temporal_at_and_it_agrees(tmp_path):
    demo = Bundle(DEMO_BUNDLE)
    assert demo.has_temporal_at
    window = np.random.default_rng(5).normal(0, 1.0, (2, 32, 1, 64)).astype(np.float32)
    whole = demo.scores(window)
    for positions in position_sets(32):
        np.testing.assert_allclose(demo.scores_at(window, positions), whole[:, positions], rtol=0, atol=1e-6)


def run_export(capsys, *argv) -> tuple[int, str]:
    code = export_main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip()


def test_temporal_at_refuses_what_it_cannot_do_in_one_line(tmp_path, exported, capsys):
    source, _ = exported
    code, err = run_export(capsys, "--temporal-at", "--out", tmp_path / "x")
    assert code == 2 and "--temporal-at is for --bundle" in err and len(err.splitlines()) == 1
    code, err = run_export(capsys, "--bundle", source, "--temporal-at", "--fp16", "--out", tmp_path / "x")
    assert code == 2 and "--temporal-at: give it alone" in err
    code, err = run_export(capsys, "--bundle", source, "--temporal-at", "--out", tmp_path / "x")
    assert code == 2 and "'graphs.temporal_at': the bundle has it already" in err and len(err.splitlines()) == 1
    # A temporal graph that is not what the head read back from it computes is refused, not
    # given a temporal_at that would score differently: its sigmoid made a tanh.
    odd = old_bundle(source, tmp_path / "odd")
    graph = onnx.load(str(odd / "temporal.onnx"))
    next(n for n in graph.graph.node if n.op_type == "Sigmoid").op_type = "Tanh"
    onnx.save(graph, str(odd / "temporal.onnx"))
    rehash(odd)
    code, err = run_export(capsys, "--bundle", odd, "--temporal-at", "--out", tmp_path / "y")
    assert code == 2 and "temporal.onnx: the temporal head read back from it scores" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "y").exists()
