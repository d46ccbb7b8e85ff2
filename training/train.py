"""Staged weakly supervised SSRL training (SPEC §4).

    python -m training.train --config configs/train/shanghai_stage1.toml [--flags ...]
    torchrun --nproc_per_node=N -m training.train ...        # DistributedDataParallel

Stage 1 trains every module. Stage n (2-4) loads the stage n-1 checkpoint for real (the
published code never did), freezes every tensor it loaded, keeps the BatchNorm layers of the
frozen modules in eval mode, and optimises only the new grid's modules. Each step draws B
normal and B abnormal videos per process, each process from its own shard. The main process
alone writes: train.log, one JSON line per evaluation in evaluations.jsonl, the checkpoint
with the best test AUC (the published selection, reported as such), the best validation
checkpoint when part of the training list is held out, the last one, and resume.pt.

Programmatic use: `train(TrainOptions(...)) -> dict`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from monitor.errors import guarded
from training.checkpoint import CheckpointError, infer_config, read_state_dict, save_checkpoint
from training.data import (FeatureReader, FeatureSetError, FeatureSpec, TrainingBatches, VideoPool,
                           check_files, cpu_workers, feature_size_of, hold_out, read_list, split_labels)
from training.distributed import Distributed
from training.evaluate import EvaluationError, TestSet, score_entries, video_metrics
from training.loss import LossTerms, LossWeights, ssrl_loss
from training.ssrl import SSRL, SSRLConfig
from training.train_options import RESUME_FILE, OptionsError, TrainOptions, options_from_args
from training.weights_file import state_dict_mismatches

STATE_FORMAT = "ssrl-train-state/1"
BEST_TEST = "best_test_auc.pkl"
BEST_VAL = "best_val_auc.pkl"
LAST = "last.pkl"
RESUME = RESUME_FILE
LOG = "train.log"
EVALUATIONS = "evaluations.jsonl"
# What must not change between an interrupted run and its continuation.
RESUME_SETTINGS = ("stage", "grids", "crops", "feature_size", "segments", "batch_size", "seed", "labels",
                   "val_fraction", "top_k")


class TrainingError(ValueError):
    """A run that cannot start or continue; the message says which input and why."""


# -- the network and its stages ----------------------------------------------------------------

def new_grid_prefixes(config: SSRLConfig) -> tuple[str, ...]:
    """Tensor-name prefixes of the modules stage n adds to stage n-1."""
    if config.stage == 1:
        return ()
    i = config.stage - 2
    return (f"Aggregate_patch.{i}.", f"patch_to_clip.{i}.", f"linear_out.{i}.")


def load_initial(model: SSRL, path: str | Path) -> set[str]:
    """Load a stage n-1 checkpoint into a stage n network (every tensor, for real) and return
    the names to freeze; a stage n checkpoint loads whole and freezes nothing (fine-tuning)."""
    state = read_state_dict(path)
    found = infer_config(state, grids=model.config.grids, crops=model.config.crops, source=str(path))
    stage = model.config.stage
    if found.feature_size != model.config.feature_size:
        raise CheckpointError(f"{path}: feature size {found.feature_size}, but the run's is {model.config.feature_size}")
    if found.stage not in (stage - 1, stage):
        raise CheckpointError(f"{path}: holds a stage-{found.stage} network; stage {stage} starts from "
                              f"stage {stage - 1} (or fine-tunes stage {stage})")
    own = model.state_dict()
    fresh = new_grid_prefixes(model.config) if found.stage == stage - 1 else ()
    problems = state_dict_mismatches(own, state, may_lack=fresh)
    if problems:
        raise CheckpointError(f"{path} does not fit stage {stage} with grids {list(model.config.grids)}: "
                              + "; ".join(problems))
    merged = dict(own)
    merged.update(state)
    model.load_state_dict(merged, strict=True)
    return set(state) if found.stage == stage - 1 else set()


def freeze(model: nn.Module, names: set[str]) -> None:
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(False)


def hold_frozen_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers whose parameters are frozen stay in eval mode (their running
    statistics are part of what was loaded); call after every `model.train()`."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and not m.weight.requires_grad:
            m.eval()


class _Parts(nn.Module):
    """`forward_parts` as a forward, so that DistributedDataParallel sees the training call."""

    def __init__(self, model: SSRL):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_parts(x)


def train_step(net: nn.Module, model: SSRL, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               weights: LossWeights) -> LossTerms:
    """One update on B normal then B abnormal videos [2B, C + ΣP, segments, F]."""
    model.train()
    hold_frozen_batchnorm(model)
    scores, features = net(x)
    terms = ssrl_loss(scores, features, x.shape[0] // 2, weights)
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    optimizer.step()
    return terms


def make_optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.Adam:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(trainable, lr=options.lr, weight_decay=options.weight_decay)


def loss_weights(options: TrainOptions) -> LossWeights:
    return LossWeights(k=options.top_k, mask_dropout=options.mask_dropout, alpha=options.alpha,
                       margin=options.margin, sparsity=options.sparsity, smoothness=options.smoothness)


# -- data ------------------------------------------------------------------------------------

class _Steps(Dataset):
    """Item s is step s's batch: lets a DataLoader prefetch in workers while staying a pure
    function of the step (what makes resuming exact)."""

    def __init__(self, batches: TrainingBatches):
        self.batches = batches

    def __len__(self):
        return 2 ** 62

    def __getitem__(self, step):
        x, y = self.batches[step]
        return torch.from_numpy(x), torch.from_numpy(y)


def _quiet_worker(_):
    # Ctrl-C reaches the whole process group; the main process decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def score_validation(model: SSRL, pool: VideoPool, k: int, device, rank: int, world: int) -> dict[int, float]:
    """Video scores of this process's share of the held-out videos: the mean of the k highest
    snippet scores of the resampled video (labels are per video, so is this measure)."""
    was = model.training
    model.eval()
    out = {}
    try:
        with torch.no_grad():
            for i in range(rank, len(pool), world):
                s = model(torch.from_numpy(pool[i])[None].to(device))[0]
                out[i] = float(torch.topk(s, min(k, s.numel())).values.mean())
    finally:
        model.train(was)
    return out


# -- run bookkeeping --------------------------------------------------------------------------

class StopRequest:
    """SIGINT / SIGTERM ask the loop to stop after the current step and save what it holds;
    a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)


def _run_logger(out: Path, append: bool, enabled: bool) -> logging.Logger:
    logger = logging.getLogger(f"training.run.{id(out)}.{time.monotonic_ns()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if enabled:
        handler = logging.FileHandler(out / LOG, mode="a" if append else "w")
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
        logger.addHandler(handler)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


def _close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_model(model: SSRL, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_checkpoint(model, tmp)
    os.replace(tmp, path)


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _progress(enabled: bool, stage: int, total: int, done: int):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.2f} steps/s" if task.speed else "… steps/s")

    progress = Progress(SpinnerColumn(), TextColumn(f"stage {stage}"), BarColumn(), MofNCompleteColumn(), Rate(),
                        TextColumn("loss {task.fields[loss]}"), TextColumn("AUC {task.fields[auc]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)
    task = progress.add_task("train", total=total, completed=done, loss="–", auc="–")
    return progress, task


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4f}"


# -- the run ---------------------------------------------------------------------------------

def _feature_size(options: TrainOptions, train_entries) -> int:
    if options.feature_size is not None:
        return options.feature_size
    if options.init is not None:
        return int(infer_config(read_state_dict(options.init), source=str(options.init)).feature_size)
    return feature_size_of(train_entries[0].path)


def _settings(options: TrainOptions, feature_size: int, world: int) -> dict:
    s = {k: getattr(options, k) for k in RESUME_SETTINGS}
    s["grids"] = list(options.grids)
    s["feature_size"] = feature_size
    s["world"] = world
    return s


def _read_resume(path: Path, settings: dict) -> dict:
    if not path.is_file():
        raise TrainingError(f"{path}: no resume state to continue from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path}: not a readable resume state ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path}: not a resume state written by training.train")
    differ = [f"{k}: run {settings[k]!r}, state {state['settings'].get(k)!r}"
              for k in settings if k != "world" and state["settings"].get(k) != settings[k]]
    if differ:
        raise TrainingError(f"{path}: the options differ from the interrupted run's ({'; '.join(differ)})")
    return state


def train(options: TrainOptions) -> dict:
    """Run (or continue) a training run; returns the paths of the checkpoints written, the
    best AUCs and the evaluation history. Under torchrun every process calls it; only the
    main process writes, and the others return the same paths."""
    options = replace(options).check()
    dist = Distributed.setup(options.device)
    try:
        return _Run(options, dist).execute()
    finally:
        dist.close()


class _Run:
    """One training run: set up in order (lists, network, data, output), then the loop."""

    def __init__(self, options: TrainOptions, dist: Distributed):
        self.options, self.dist, self.device = options, dist, dist.device
        self.out = Path(options.out)
        self.resume_path = options.resume_path()
        if self.resume_path is None and not options.overwrite and ((self.out / RESUME).exists() or (self.out / LAST).exists()):
            raise TrainingError(f"{self.out}: already holds a run; continue it with --resume, or start afresh "
                                f"with --overwrite (or another --out)")
        self._lists()
        self._network()
        self._data()
        self.best = dict(self.state["best"]) if self.state else \
            {"test_auc": None, "test_step": None, "val_auc": None, "val_step": None}
        self.history: list[dict] = list(self.state["history"]) if self.state else []

    def _lists(self) -> None:
        o = self.options
        entries = read_list(o.train_list, o.features_dir, o.labels)
        train_entries, self.val_entries = hold_out(entries, o.val_fraction, o.seed)
        self.normal_entries, self.abnormal_entries = split_labels(train_entries)
        if not self.normal_entries or not self.abnormal_entries:
            raise TrainingError(f"{o.train_list}: training needs normal and abnormal videos ({len(self.normal_entries)} "
                                f"normal, {len(self.abnormal_entries)} abnormal with labels {o.labels!r})")
        self.feature_size = _feature_size(o, entries)

    def _network(self) -> None:
        """The network, its starting weights (random, --init, or the resume state), what stays
        frozen, the optimiser, and the random state."""
        o, dist = self.options, self.dist
        self.settings = _settings(o, self.feature_size, dist.world)
        self.state = _read_resume(self.resume_path, self.settings) if self.resume_path else None
        torch.manual_seed(o.seed)
        self.config = SSRLConfig(stage=o.stage, grids=tuple(o.grids), crops=o.crops,
                                 feature_size=self.feature_size).validate()
        model = SSRL(self.config)
        if self.state is not None:
            self.frozen = set(self.state["frozen"])
            model.load_state_dict(self.state["model"], strict=True)
        elif o.init is not None:
            self.frozen = load_initial(model, o.init)
        else:
            self.frozen = set()
        freeze(model, self.frozen)
        self.model = model.to(self.device)
        self.optimizer = make_optimizer(model, o)
        self.start = 0
        torch.manual_seed(o.seed * 1000 + dist.rank)   # dropout masks differ between processes
        if self.state is not None:
            self.optimizer.load_state_dict(self.state["optimizer"])
            for group in self.optimizer.param_groups:
                group["lr"], group["weight_decay"] = o.lr, o.weight_decay
            self.start = int(self.state["step"])
            rngs = self.state["rng"]
            if len(rngs) == dist.world:
                _set_rng_state(rngs[dist.rank], self.device)
            else:   # another number of processes: continue, but not bit for bit
                torch.manual_seed(o.seed * 1000 + dist.rank + self.start)
        self.net = _Parts(model)
        if dist.active:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _data(self) -> None:
        """Every file is checked by its header before the first step."""
        o, dist = self.options, self.dist
        reader = FeatureReader(FeatureSpec.for_model(self.config, patch_dirs=o.patch_dirs, layout=o.layout,
                                                     segments=o.segments))
        check_files(reader, self.normal_entries + self.abnormal_entries + self.val_entries, "training")
        self.weights = loss_weights(o)
        self.k = self.weights.top_k(o.segments)
        self.batches = TrainingBatches(VideoPool(reader, self.normal_entries, o.cache),
                                       VideoPool(reader, self.abnormal_entries, o.cache),
                                       o.batch_size, o.seed, dist.rank, dist.world)
        self.val_pool = VideoPool(reader, self.val_entries, o.cache) if self.val_entries else None
        self.test_set = None
        if o.test_list is not None:
            test_reader = FeatureReader(FeatureSpec.for_model(self.config, patch_dirs=o.patch_dirs,
                                                              layout="snippet-major"))
            self.test_set = TestSet.open(test_reader, o.test_list, o.gt, o.test_features_dir or o.features_dir)

    # -- output --------------------------------------------------------------------------------
    def paths(self) -> dict:
        out = self.out
        return {"out": str(out), "log": str(out / LOG), "evaluations": str(out / EVALUATIONS),
                "last_checkpoint": str(out / LAST),
                "best_test_checkpoint": str(out / BEST_TEST) if self.test_set else None,
                "best_val_checkpoint": str(out / BEST_VAL) if self.val_pool else None}

    def _log_start(self) -> None:
        m, c = self.model, self.config
        self.logger.info(f"resuming at step {self.start} from {self.resume_path}" if self.state else "new run")
        self.logger.info("options %s", json.dumps(self.options.to_json()))
        self.logger.info(
            "stage %d grids %s crops %d F %d; %d processes (%s, %s); %d normal + %d abnormal training videos, "
            "%d held out, %d test videos; %d trainable tensors (%d values), %d frozen",
            c.stage, list(c.active_grids), c.crops, self.feature_size, self.dist.world,
            self.dist.backend or "single", self.device, len(self.normal_entries), len(self.abnormal_entries),
            len(self.val_entries), len(self.test_set.entries) if self.test_set else 0,
            sum(1 for p in m.parameters() if p.requires_grad),
            sum(p.numel() for p in m.parameters() if p.requires_grad), len(self.frozen))

    def save_state(self, step: int) -> None:
        rngs = self.dist.gather(_rng_state(self.device))
        if not self.dist.main:
            return
        _save_model(self.model, self.out / LAST)
        _atomic_save({"format": STATE_FORMAT, "step": step, "settings": self.settings, "frozen": sorted(self.frozen),
                      "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                      "optimizer": self.optimizer.state_dict(), "rng": rngs, "best": self.best,
                      "history": self.history}, self.out / RESUME)

    def evaluate(self, step: int, loss: float | None, select: bool = True) -> dict | None:
        """Test (frame AUC) and validation (video AUC) scores, each process its share; the main
        process merges, records, and keeps the best checkpoints. None on other processes."""
        dist, model, best = self.dist, self.model, self.best
        dist.share_buffers(model)   # every process scores with the main process's network
        test_parts = val_parts = None
        if self.test_set:
            test_parts = dist.gather(score_entries(model, self.test_set.reader, self.test_set.entries, self.device,
                                                   dist.rank, dist.world))
        if self.val_pool:
            val_parts = dist.gather(score_validation(model, self.val_pool, self.k, self.device, dist.rank, dist.world))
        if not dist.main:
            return None
        record = {"step": step, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "elapsed_s": round(time.perf_counter() - self.started, 2), "loss": loss}
        if self.test_set:
            result = self.test_set.result({i: s for part in test_parts for i, s in part.items()})
            record.update(test_auc=result.auc, test_ap=result.ap)
            if select and (best["test_auc"] is None or result.auc > best["test_auc"]):
                best.update(test_auc=result.auc, test_step=step)
                _save_model(model, self.out / BEST_TEST)
        if self.val_pool:
            merged = {i: s for part in val_parts for i, s in part.items()}
            auc, ap = video_metrics([merged[i] for i in range(len(self.val_entries))],
                                    [e.label for e in self.val_entries])
            record.update(val_auc=auc, val_ap=ap)
            if select and (best["val_auc"] is None or auc > best["val_auc"]):
                best.update(val_auc=auc, val_step=step)
                _save_model(model, self.out / BEST_VAL)
        record.update(best_test_auc=best["test_auc"], best_test_step=best["test_step"],
                      best_val_auc=best["val_auc"], best_val_step=best["val_step"])
        self.history.append(record)
        with open(self.out / EVALUATIONS, "a") as f:
            f.write(json.dumps(record) + "\n")
        line = (f"step {step}: loss {_fmt(loss)}  test AUC {_fmt(record.get('test_auc'))} AP {_fmt(record.get('test_ap'))}"
                f"  val AUC {_fmt(record.get('val_auc'))}  best test AUC {_fmt(best['test_auc'])} "
                f"(step {best['test_step']})")
        self.logger.info(line)
        self.console.print(line)
        return record

    # -- the loop ------------------------------------------------------------------------------
    def execute(self) -> dict:
        o, dist = self.options, self.dist
        if dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.state is None:
                (self.out / EVALUATIONS).write_text("")
        self.logger = _run_logger(self.out, append=self.state is not None, enabled=dist.main)
        loader = DataLoader(_Steps(self.batches), batch_size=None, sampler=range(self.start + 1, o.steps + 1),
                            num_workers=cpu_workers(o.workers), pin_memory=self.device.type == "cuda",
                            worker_init_fn=_quiet_worker, generator=torch.Generator().manual_seed(o.seed))
        evaluating = bool(self.test_set or self.val_pool)
        step, stopped, losses = self.start, False, []
        progress, task = _progress(o.progress and dist.main, self.config.stage, o.steps, self.start)
        self.console = progress.console if dist.main else _Silent()
        self.started = time.perf_counter()
        try:
            if dist.main:
                self._log_start()
            with StopRequest() as stop, progress:
                if self.state is None and o.eval_at_start and evaluating:
                    # As the published script: the untrained network's AUC, for reference (never selected).
                    record = self.evaluate(0, None, select=False)
                    if record:
                        progress.update(task, auc=_fmt(record.get("test_auc", record.get("val_auc"))))
                for x, _ in loader:
                    step += 1
                    terms = train_step(self.net, self.model, self.optimizer, x.to(self.device, non_blocking=True),
                                       self.weights)
                    loss = float(terms.total.detach())
                    if not math.isfinite(loss):
                        raise TrainingError(f"step {step}: the loss is {loss}; lower --lr or check the features")
                    losses.append(loss)
                    progress.update(task, advance=1, loss=f"{loss:.4f}")
                    last = step == o.steps
                    if (step % o.eval_every == 0 and step > o.eval_after) or last:
                        mean_loss = float(np.mean(losses))
                        losses = []
                        if evaluating:
                            record = self.evaluate(step, mean_loss)
                            if record:
                                progress.update(task, auc=_fmt(record.get("test_auc", record.get("val_auc"))))
                        elif dist.main:
                            self.logger.info("step %d loss %s", step, _fmt(mean_loss))
                    if step % o.save_every == 0 and not last:
                        self.save_state(step)
                    if dist.any(stop.requested):
                        stopped = step < o.steps
                        break
            self.save_state(step)
            if dist.main:
                b = self.best
                self.logger.info(
                    "%s at step %d after %.1f s; best test AUC %s (step %s, selected on the test set as the "
                    "published protocol does); best validation AUC %s (step %s)", "stopped" if stopped else "finished",
                    step, time.perf_counter() - self.started, _fmt(b["test_auc"]), b["test_step"],
                    _fmt(b["val_auc"]), b["val_step"])
        finally:
            _close_logger(self.logger)
        b = self.best
        return {**self.paths(), "steps": step, "stopped": stopped, "best_test_auc": b["test_auc"],
                "best_test_step": b["test_step"], "best_val_auc": b["val_auc"], "best_val_step": b["val_step"],
                "history": self.history}


class _Silent:
    def print(self, *args, **kwargs):
        pass


def main(argv=None) -> int:
    try:
        options = options_from_args(argv)
        result = train(options)
    except (OptionsError, TrainingError, FeatureSetError, CheckpointError, EvaluationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{'stopped' if result['stopped'] else 'finished'} at step {result['steps']}: "
              f"best test AUC {_fmt(result['best_test_auc'])} (step {result['best_test_step']}, test-selected); "
              f"best validation AUC {_fmt(result['best_val_auc'])}; checkpoints in {result['out']}")
    return 130 if result["stopped"] else 0


if __name__ == "__main__":
    sys.exit(guarded(main))
