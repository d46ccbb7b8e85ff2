"""Staged training on a seeded synthetic feature set: stage 1 learns, stage 2 really starts
from stage 1 and leaves it untouched, resuming equals not stopping, TOML configs and flags."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training_synthetic import make_feature_set
from training.checkpoint import CheckpointError, load_model, read_state_dict, save_checkpoint
from training.evaluate import evaluate_checkpoint
from training.ssrl import SSRL, SSRLConfig
from training.train import freeze, load_initial, main, train
from training.train_options import OptionsError, TrainOptions, options_from_args
from tests.torch_threads import one_thread  # noqa: F401  (autouse)

ROOT = Path(__file__).resolve().parents[1]
F, CROPS = 32, 2


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_feature_set(tmp_path_factory.mktemp("synthetic"), feature_size=F, crops=CROPS, grids=(23, 35))


def options(data, out, **kw):
    base = dict(train_list=data.train_list, labels=str(data.abnormal_train), test_list=data.test_list, gt=data.gt,
                crops=CROPS, workers=0, cache=True, progress=False, out=out, seed=4)
    base.update(kw)
    return TrainOptions(**base)


def test_stage1_learns_the_synthetic_anomalies(synthetic, tmp_path):
    result = train(options(synthetic, tmp_path / "s1", steps=40, eval_every=10))
    history = result["history"]
    assert [h["step"] for h in history] == [0, 10, 20, 30, 40]
    untrained, best = history[0]["test_auc"], result["best_test_auc"]
    print(f"\nsynthetic stage-1 frame AUC: untrained {untrained:.4f}, best {best:.4f} at step "
          f"{result['best_test_step']}, last {history[-1]['test_auc']:.4f}")
    assert untrained < 0.9            # the untrained network does not already know the answer
    assert best >= 0.9 and history[-1]["test_auc"] >= 0.9
    # Checkpoints are in the published format and score as the trainer reported.
    for key in ("best_test_checkpoint", "last_checkpoint"):
        state = torch.load(result[key], weights_only=True)
        assert "Aggregate_clip.conv_1.0.weight" in state and not any(k.startswith("module.") for k in state)
    again = evaluate_checkpoint(result["best_test_checkpoint"], synthetic.test_list, synthetic.gt, crops=CROPS)
    assert again.auc == pytest.approx(best, abs=1e-6)
    # One JSON line per evaluation, and the log says how the best was chosen.
    lines = [json.loads(x) for x in Path(result["evaluations"]).read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 10, 20, 30, 40] and lines[-1]["best_test_auc"] == best
    assert "selected on the test set" in Path(result["log"]).read_text()


def test_stage2_starts_from_stage1_and_never_changes_it(synthetic, tmp_path):
    s1 = train(options(synthetic, tmp_path / "s1", steps=6, test_list=None, gt=None))
    stage1 = read_state_dict(s1["last_checkpoint"])
    s2 = train(options(synthetic, tmp_path / "s2", stage=2, init=Path(s1["last_checkpoint"]), steps=6,
                       eval_every=3))
    stage2 = read_state_dict(s2["last_checkpoint"])
    # Every tensor that came from stage 1 (weights and BatchNorm statistics) is unchanged...
    for name, value in stage1.items():
        assert torch.equal(stage2[name], value), name
    # ...and the new grid's modules did train: they left their initial values.
    torch.manual_seed(4)
    initial = SSRL(SSRLConfig(stage=2, crops=CROPS, feature_size=F)).state_dict()
    new = [k for k in stage2 if k not in stage1]
    assert new and all(k.startswith(("Aggregate_patch.0.", "patch_to_clip.0.", "linear_out.0.")) for k in new)
    assert not torch.equal(stage2["linear_out.0.weight"], initial["linear_out.0.weight"])
    assert not torch.equal(stage2["patch_to_clip.0.2.running_mean"], initial["patch_to_clip.0.2.running_mean"])
    # Stage 3 from stage 2: the same again, one grid further.
    s3 = train(options(synthetic, tmp_path / "s3", stage=3, init=Path(s2["last_checkpoint"]), steps=3,
                       test_list=None, gt=None))
    stage3 = read_state_dict(s3["last_checkpoint"])
    assert all(torch.equal(stage3[k], v) for k, v in stage2.items())
    assert load_model(s3["last_checkpoint"], crops=CROPS).config.stage == 3


def test_a_small_single_crop_model_with_its_own_grid_trains_stages_and_exports(tmp_path):
    """What a demo recipe does: F = 64, one crop, a 2×2 grid, stage 1 then 2, then a bundle."""
    data = make_feature_set(tmp_path / "d", feature_size=64, crops=1, grids=(22,), normal=8, abnormal=8,
                            test_normal=2, test_abnormal=2, length=(10, 40), seed=3)
    common = dict(crops=1, grids=(22,), batch_size=2, eval_every=2)
    s1 = train(options(data, tmp_path / "s1", steps=4, **common))
    s2 = train(options(data, tmp_path / "s2", stage=2, init=Path(s1["best_test_checkpoint"]), steps=4, **common))
    assert [h["step"] for h in s2["history"]] == [0, 2, 4]
    from export.__main__ import main as export_main
    from training.evaluate import evaluate_bundle
    assert export_main(["--checkpoint", s2["last_checkpoint"], "--out", str(tmp_path / "bundle"),
                        "--crops", "1", "--grids", "22"]) == 0
    alone = evaluate_checkpoint(s2["last_checkpoint"], data.test_list, data.gt, crops=1, grids=(22,))
    assert alone.auc == pytest.approx(s2["history"][-1]["test_auc"], abs=1e-6)
    assert evaluate_bundle(tmp_path / "bundle", data.test_list, data.gt).auc == pytest.approx(alone.auc, abs=1e-3)


def test_crop_major_training_files_train_exactly_like_snippet_major_ones(synthetic, tmp_path):
    """The published UCF training features are stored [crops, 32, F]: the same videos stored so
    must give the very same run."""
    from training.data import FeatureReader, FeatureSpec
    reader = FeatureReader(FeatureSpec(crops=CROPS, feature_size=F, grids=(23,)))
    cm = tmp_path / "crop_major"
    cm.mkdir()
    for line in synthetic.train_list.read_text().split():
        seg = reader.segments(synthetic.root / line)              # [crops + 6, 32, F]
        np.save(cm / line, seg[:CROPS])
        np.save(cm / line.replace("_i3d", "_patch23_i3d"), seg[CROPS:])
    common = dict(stage=2, from_scratch=True, steps=3, test_list=None, gt=None)
    a = train(options(synthetic, tmp_path / "a", **common))
    b = train(options(synthetic, tmp_path / "b", features_dir=cm, layout="crop-major", **common))
    sa, sb = read_state_dict(a["last_checkpoint"]), read_state_dict(b["last_checkpoint"])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_only_the_new_grid_is_trainable_and_frozen_batchnorm_stays_in_eval(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(SSRL(SSRLConfig(stage=2, crops=1, feature_size=16)), tmp_path / "s2.pkl")
    model = SSRL(SSRLConfig(stage=3, crops=1, feature_size=16))
    frozen = load_initial(model, tmp_path / "s2.pkl")
    freeze(model, frozen)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("Aggregate_patch.1.", "patch_to_clip.1.", "linear_out.1.")) for n in trainable)
    assert {n for n, _ in model.named_parameters()} - trainable == {n for n in frozen if "running" not in n
                                                                      and "num_batches" not in n}
    from training.train import hold_frozen_batchnorm
    model.train()
    hold_frozen_batchnorm(model)
    assert not model.Aggregate_clip.conv_5[2].training and not model.patch_to_clip[0][2].training
    assert model.patch_to_clip[1][2].training and model.Aggregate_patch[1].conv_1[2].training
    assert model.classfier.training      # frozen, but its dropout stays active as published


def test_stage2_starts_from_a_published_style_stage1_file(tmp_path):
    """Published files may carry `module.` prefixes and name the clip block `Aggregate_base`."""
    torch.manual_seed(0)
    stage1 = SSRL(SSRLConfig(stage=1, crops=1, feature_size=16)).state_dict()
    published = {"module." + k.replace("Aggregate_clip.", "Aggregate_base."): v for k, v in stage1.items()}
    torch.save(published, tmp_path / "best_auc_stage1.pkl")
    model = SSRL(SSRLConfig(stage=2, crops=1, feature_size=16))
    frozen = load_initial(model, tmp_path / "best_auc_stage1.pkl")
    assert frozen == set(stage1)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stage1.items())


def test_starting_checkpoints_that_do_not_fit_are_refused(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(SSRL(SSRLConfig(stage=3, crops=1, feature_size=16)), tmp_path / "s3.pkl")
    with pytest.raises(CheckpointError, match=r"s3\.pkl: holds a stage-3 network; stage 2 starts from stage 1"):
        load_initial(SSRL(SSRLConfig(stage=2, crops=1, feature_size=16)), tmp_path / "s3.pkl")
    with pytest.raises(CheckpointError, match=r"s3\.pkl: feature size 16, but the run's is 32"):
        load_initial(SSRL(SSRLConfig(stage=4, crops=1, feature_size=32)), tmp_path / "s3.pkl")
    with pytest.raises(OptionsError, match="stage 2 starts from the stage-1 checkpoint: give --init"):
        TrainOptions(train_list=Path("x"), stage=2).check()


def test_resume_gives_what_an_uninterrupted_run_gives(synthetic, tmp_path):
    whole = train(options(synthetic, tmp_path / "whole", steps=8, eval_every=4, cache=False))
    first = train(options(synthetic, tmp_path / "split", steps=5, eval_every=4, cache=False))
    assert first["steps"] == 5 and (tmp_path / "split" / "resume.pt").is_file()
    # Continue in data-loading worker processes this time: the batches are a function of the step.
    rest = train(options(synthetic, tmp_path / "split", steps=8, eval_every=4, cache=False, workers=1, resume="latest"))
    assert rest["steps"] == 8
    a, b = read_state_dict(whole["last_checkpoint"]), read_state_dict(rest["last_checkpoint"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    aucs = lambda r: {h["step"]: h["test_auc"] for h in r["history"] if h["step"] in (0, 4, 8)}
    assert aucs(whole) == aucs(rest)
    assert "resuming at step 5" in (tmp_path / "split" / "train.log").read_text()
    with pytest.raises(ValueError, match=r"options differ from the interrupted run's \(seed: run 5, state 4\)"):
        train(options(synthetic, tmp_path / "split", steps=9, seed=5, resume="latest"))


def test_validation_hold_out_selects_its_own_checkpoint(synthetic, tmp_path):
    result = train(options(synthetic, tmp_path / "val", steps=6, eval_every=3, val_fraction=0.25))
    assert Path(result["best_val_checkpoint"]).is_file() and result["best_val_auc"] is not None
    assert all("val_auc" in h and "test_auc" in h for h in result["history"])
    assert "6 held out" in (tmp_path / "val" / "train.log").read_text()    # 3 normal + 3 abnormal of 24


def test_command_line_with_a_toml_config(synthetic, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(f'train-list = "{synthetic.train_list}"\nlabels = {synthetic.abnormal_train}\n'
                      f'test_list = "{synthetic.test_list}"\ngt = "{synthetic.gt}"\ncrops = {CROPS}\n'
                      f'steps = 100\neval_every = 2\nworkers = 0\nseed = 4\nout = "{tmp_path / "cli"}"\n')
    assert main(["--config", str(config), "--steps", "4", "--no-progress", "--lr", "5e-4"]) == 0
    assert "finished at step 4" in capsys.readouterr().out
    logged = (tmp_path / "cli" / "train.log").read_text()
    assert '"steps": 4' in logged and '"lr": 0.0005' in logged and '"eval_every": 2' in logged
    assert len((tmp_path / "cli" / "evaluations.jsonl").read_text().splitlines()) == 3
    # The same output directory again: refused unless continued or overwritten.
    assert main(["--config", str(config), "--steps", "4", "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["--config", str(config), "--steps", "6", "--no-progress", "--resume"]) == 0
    # Bad configuration files name the file and the key.
    config.write_text('stepz = 3\n')
    assert main(["--config", str(config)]) == 2
    assert f"{config}: unknown key 'stepz'" in capsys.readouterr().err
    config.write_text('steps = "many"\n')
    assert main(["--config", str(config)]) == 2
    assert f"{config}: key 'steps': expected int, found 'many'" in capsys.readouterr().err
    # A missing feature file stops the run before the first step, by name and list line.
    broken = tmp_path / "broken.list"
    broken.write_text(synthetic.train_list.read_text() + "nowhere_i3d.npy\n")
    assert main(["--train-list", str(broken), "--features-dir", str(synthetic.root), "--labels", "12",
                 "--crops", "2", "--out", str(tmp_path / "b"), "--no-progress", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "nowhere_i3d.npy: no such feature file" in err and f"broken.list:{len(synthetic.names) - 8 + 1}" in err


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs" / "train").glob("*.toml")))
def test_shipped_configs_mirror_the_published_scripts(name):
    o = options_from_args(["--config", str(ROOT / "configs" / "train" / name)]).check()
    dataset, stage = name[:-5].split("_stage")
    assert o.stage == int(stage) and o.grids == (23, 35, 47) and o.crops == 10 and o.feature_size == 2048
    assert (o.lr, o.weight_decay, o.batch_size, o.steps, o.eval_every, o.eval_after, o.segments) == \
        (1e-3, 5e-3, 4, 150000, 5, 50, 32)
    assert o.labels == dataset and o.out == Path(f"runs/{dataset}/stage{stage}")
    if o.stage > 1:
        assert o.init == Path(f"runs/{dataset}/stage{o.stage - 1}/best_test_auc.pkl") and o.patch_dirs
    else:
        assert o.init is None


def test_configs_cover_both_datasets_and_every_stage():
    names = {p.name for p in (ROOT / "configs" / "train").glob("*.toml")}
    assert names == {f"{d}_stage{s}.toml" for d in ("shanghai", "ucf") for s in (1, 2, 3, 4)}


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_run_continues(synthetic, tmp_path):
    out = tmp_path / "long"
    cmd = [sys.executable, "-m", "training.train", "--train-list", str(synthetic.train_list), "--labels", "12",
           "--crops", "2", "--steps", "100000", "--eval-every", "5", "--workers", "0", "--no-progress",
           "--test-list", str(synthetic.test_list), "--gt", str(synthetic.gt), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    evaluations = out / "evaluations.jsonl"
    deadline = time.monotonic() + 300   # torch's import alone can take a while on a loaded machine
    while not (evaluations.is_file() and len(evaluations.read_text().splitlines()) >= 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no two evaluations to stop after (exit {proc.poll()}): {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    state = torch.load(out / "resume.pt", weights_only=True)
    assert 5 <= state["step"] < 100000 and (out / "last.pkl").is_file()
    assert "stopped at step" in (out / "train.log").read_text()
    result = train(options(synthetic, out, steps=state["step"] + 2, resume="latest", seed=10))
    assert result["steps"] == state["step"] + 2 and not result["stopped"]


def test_flags_that_turn_an_option_off_say_so_in_help():
    from training.train_options import build_parser
    text = " ".join(build_parser().format_help().split())
    assert "--no-eval-at-start skip evaluating the untrained network first" in text
    assert "--no-progress no progress bar" in text
    assert "--no-progress show a progress bar" not in text
