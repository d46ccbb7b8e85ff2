"""Published checkpoints load with strict checking; bad ones are refused with a reason."""
import pickle

import pytest
import torch

from tests.head_helpers import reference_shapes, reference_state_dict
from training.checkpoint import CheckpointError, load_model, read_state_dict


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_published_names_and_shapes_load_strictly(tmp_path, stage):
    state = reference_state_dict(stage)
    path = tmp_path / f"best_auc_stage{stage}.pkl"
    torch.save(state, path)
    model = load_model(path)
    assert model.config.stage == stage
    assert list(model.config.active_grids) == [23, 35, 47][: stage - 1]
    assert model.config.feature_size == 2048
    loaded = model.state_dict()
    assert set(loaded) == set(reference_shapes(f"stage{stage}"))
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    assert not model.training


def test_module_prefix_is_stripped(tmp_path):
    state = {f"module.{k}": v for k, v in reference_state_dict(2).items()}
    torch.save(state, tmp_path / "ddp.pkl")
    assert load_model(tmp_path / "ddp.pkl").config.stage == 2


def test_stage_one_aggregate_base_revision_loads(tmp_path):
    state = {k.replace("Aggregate_clip.", "Aggregate_base."): v for k, v in reference_state_dict(1).items()}
    torch.save(state, tmp_path / "s1.pkl")
    model = load_model(tmp_path / "s1.pkl")
    assert torch.equal(model.state_dict()["Aggregate_clip.conv_5.0.weight"], state["Aggregate_base.conv_5.0.weight"])


def test_wrong_shape_names_tensor_expected_and_found(tmp_path):
    state = reference_state_dict(2)
    state["linear_out.0.weight"] = torch.zeros(2048, 3072)
    torch.save(state, tmp_path / "bad.pkl")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pkl")
    msg = str(err.value)
    assert "linear_out.0.weight" in msg and "[2048, 6144]" in msg and "[2048, 3072]" in msg
    assert "bad.pkl" in msg


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    state = reference_state_dict(1)
    del state["Aggregate_clip.conv_5.2.running_var"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "odd.pkl")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "odd.pkl")
    assert "Aggregate_clip.conv_5.2.running_var" in str(err.value)
    assert "extra.weight" in str(err.value)


def test_stage_flag_must_agree_with_tensors(tmp_path):
    torch.save(reference_state_dict(3), tmp_path / "s3.pkl")
    with pytest.raises(CheckpointError, match="stage 3"):
        load_model(tmp_path / "s3.pkl", stage=4)


def test_not_a_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pkl"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_state_dict(tmp_path / "absent.pkl")


class Payload:
    def __reduce__(self):  # what a malicious pickle would do on load
        return (print, ("code ran",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"classfier.fc1.weight": Payload()}, fh)
    with pytest.raises(CheckpointError, match="evil.pkl"):
        read_state_dict(path)
