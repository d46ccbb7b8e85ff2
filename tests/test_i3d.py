"""The I3D-ResNet50 trunk of SPEC §2 and its strict loader for the published weight file."""
import numpy as np
import pytest
import torch

from tests.head_helpers import reference_shapes
from tests.i3d_helpers import small_backbone
from training.i3d import I3DError, I3DResNet50, load_i3d


def test_tensor_names_shapes_and_order_are_those_of_the_published_file():
    reference = reference_shapes("i3d_r50")
    state = I3DResNet50().state_dict()
    assert list(state) == list(reference)
    for name, shape in reference.items():
        assert list(state[name].shape) == shape, name


def test_structure_follows_spec():
    m = I3DResNet50()
    assert (m.conv1.kernel_size, m.conv1.stride, m.conv1.padding) == ((5, 7, 7), (2, 2, 2), (2, 3, 3))
    assert m.conv1.bias is None
    assert (m.maxpool1.kernel_size, m.maxpool1.stride, m.maxpool1.padding) == ((2, 3, 3), (2, 2, 2), 0)
    assert (m.maxpool2.kernel_size, m.maxpool2.stride) == ((2, 1, 1), (2, 1, 1))
    flags = {"layer1": [1, 1, 1], "layer2": [1, 0, 1, 0], "layer3": [1, 0, 1, 0, 1, 0], "layer4": [0, 1, 0]}
    for layer, tcs in flags.items():
        blocks = getattr(m, layer)
        assert [b.conv1.kernel_size[0] // 2 for b in blocks] == tcs, layer
        assert [b.conv1.padding[0] for b in blocks] == tcs, layer
        assert all(b.conv1.stride == (1, 1, 1) and b.conv2.kernel_size == (1, 3, 3) for b in blocks)
        spatial = 1 if layer == "layer1" else 2
        assert blocks[0].conv2.stride == (1, spatial, spatial) and blocks[0].downsample is not None
        assert all(b.conv2.stride == (1, 1, 1) and b.downsample is None for b in blocks[1:])
    assert m.feature_size == 2048


def test_pooled_features_are_the_mean_of_the_last_layer():
    m = small_backbone(seed=3)
    clips = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        x = m.maxpool1(m.relu(m.bn1(m.conv1(clips))))
        x = m.layer4(m.layer3(m.layer2(m.maxpool2(m.layer1(x)))))
        assert x.shape[2] == 2  # 16 frames: /2 conv1, /2 maxpool1, /2 maxpool2
        torch.testing.assert_close(m(clips), x.mean(dim=(2, 3, 4)))
    assert m(clips).shape == (2, 128)


def reference_weights(seed=0):
    """A weight file with exactly the published names and shapes, seeded values."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in reference_shapes("i3d_r50").items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g) * 0.01
    return state


def test_a_file_in_the_published_format_loads_strictly(tmp_path):
    state = reference_weights()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "i3d_r50_kinetics.pth")  # DataParallel form
    model = load_i3d(tmp_path / "i3d_r50_kinetics.pth", width=64)
    assert model.feature_size == 2048 and not model.training
    torch.testing.assert_close(model.layer3[5].conv1.weight, state["layer3.5.conv1.weight"])
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 16, 32, 32)).shape == (1, 2048)


def save(state, path):
    torch.save(state, path)
    return path


def test_mis_shaped_tensor_is_named_with_expected_and_found_shapes(tmp_path):
    state = small_backbone().state_dict()
    state["layer2.1.conv1.weight"] = torch.zeros(8, 32, 3, 1, 1)  # tc = 1 where SPEC says 0 (width 4)
    with pytest.raises(I3DError, match=r"tensor 'layer2.1.conv1.weight': expected shape \[8, 32, 1, 1, 1\], "
                                       r"found \[8, 32, 3, 1, 1\]"):
        load_i3d(save(state, tmp_path / "w.pth"))


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    state = small_backbone().state_dict()
    del state["layer4.2.bn3.running_var"]
    state["layer1.0.nl.theta.weight"] = torch.zeros(1)
    with pytest.raises(I3DError) as err:
        load_i3d(save(state, tmp_path / "w.pth"))
    assert "missing tensors: layer4.2.bn3.running_var" in str(err.value)
    assert "unexpected tensors: layer1.0.nl.theta.weight" in str(err.value)


def test_width_is_checked_when_asked(tmp_path):
    with pytest.raises(I3DError, match=r"tensor 'conv1.weight': expected shape \[64, 3, 5, 7, 7\], found \[4, 3, 5, 7, 7\]"):
        load_i3d(save(small_backbone().state_dict(), tmp_path / "w.pth"), width=64)


def test_a_file_that_is_not_i3d_weights_is_refused(tmp_path):
    with pytest.raises(I3DError, match="no such I3D weight file"):
        load_i3d(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(I3DError, match=r"not a readable PyTorch weight file \(neither the zip archive torch.save "
                                       r"writes nor a legacy pickle: it starts with b'not '"):
        load_i3d(tmp_path / "junk.pth")
    whole = save({"conv1.weight": torch.zeros(4, 3, 5, 7, 7)}, tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(I3DError, match="its zip archive is incomplete: truncated or damaged"):
        load_i3d(tmp_path / "cut.pth")
    with pytest.raises(I3DError, match="tensor 'conv1.weight'"):
        load_i3d(save({"fc.weight": torch.zeros(400, 2048)}, tmp_path / "head.pth"))


def test_loading_never_runs_pickled_code(tmp_path):
    # weights_only=True: a file carrying arbitrary objects is refused, not executed.
    save({"conv1.weight": torch.zeros(4, 3, 5, 7, 7), "extra": np.dtype("float32"), "f": print}, tmp_path / "evil.pth")
    with pytest.raises(I3DError, match="not a readable PyTorch weight file .*it holds more than tensors"):
        load_i3d(tmp_path / "evil.pth")


def test_loaded_weights_give_the_same_features(tmp_path):
    model = small_backbone(seed=5)
    loaded = load_i3d(save(model.state_dict(), tmp_path / "w.pth"))
    clips = torch.rand(3, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips), model(clips), rtol=0, atol=0)
