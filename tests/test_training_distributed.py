"""Many processes: torchrun with two Gloo processes on the CPU, DistributedDataParallel,
each process its own shard, evaluation shared out and gathered, everything written once."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training_synthetic import make_feature_set
from training.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_gloo_processes_train_and_write_once(tmp_path):
    data = make_feature_set(tmp_path / "data", feature_size=32, crops=2, normal=10, abnormal=10)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "training.train", "--train-list", str(data.train_list), "--labels", "10", "--crops", "2",
           "--test-list", str(data.test_list), "--gt", str(data.gt), "--steps", "4", "--eval-every", "2",
           "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("finished at step 4") == 1          # only the main process reports
    log = (out / "train.log").read_text()
    assert log.count("new run") == 1 and "2 processes (gloo, cpu)" in log
    records = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 4]             # one line per evaluation, not one per process
    # The gathered evaluation covers every test video: its AUC is that of the checkpoint scored alone.
    from training.evaluate import evaluate_checkpoint
    alone = evaluate_checkpoint(out / "last.pkl", data.test_list, data.gt, crops=2, device="cpu")
    assert records[-1]["test_auc"] == pytest.approx(alone.auc, abs=1e-6)
    state = torch.load(out / "resume.pt", weights_only=True)
    assert state["step"] == 4 and state["settings"]["world"] == 2 and len(state["rng"]) == 2
    # Different processes drew different dropout masks (their random states differ).
    assert not torch.equal(state["rng"][0]["cpu"], state["rng"][1]["cpu"])
    assert load_model(out / "last.pkl", crops=2).config.stage == 1
