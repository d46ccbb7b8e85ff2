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

from training.checkpoint import CheckpointError, infer_config, read_state_dict, save_checkpoint
from training.data import (FeatureReader, FeatureSetError, FeatureSpec, TrainingBatches, VideoPool,
                           check_files, cpu_workers, feature_size_of, hold_out, read_list, split_labels)
from training.distributed import Distributed
from training.evaluate import EvaluationError, TestSet, score_entries, video_metrics
from training.loss import LossTerms, LossWeights, ssrl_loss
from training.ssrl import SSRL, SSRLConfig
from training.train_options import OptionsError, TrainOptions, options_from_args

STATE_FORMAT = "ssrl-train-state/1"
BEST_TEST = "best_test_auc.pkl"
BEST_VAL = "best_val_auc.pkl"
LAST = "last.pkl"
RESUME = "resume.pt"
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
    problems = []
    missing = [k for k in own if k not in state and not k.startswith(fresh)]
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    for k, v in state.items():
        if k not in own:
            problems.append(f"unexpected tensor '{k}'")
        elif tuple(v.shape) != tuple(own[k].shape):
            problems.append(f"tensor '{k}': the network has shape {list(own[k].shape)}, the file {list(v.shape)}")
    if problems:
        raise CheckpointError(f"{path} does not fit stage {stage} with grids {list(model.config.grids)}: "
                              + "; ".join(problems[:8]))
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

def _resolve_feature_size(options: TrainOptions, train_entries, resume_state) -> int:
    if options.feature_size is not None:
        return options.feature_size
    if resume_state is not None:
        return int(resume_state["settings"]["feature_size"])
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
        return _train(options, dist)
    finally:
        dist.close()


def _train(options: TrainOptions, dist: Distributed) -> dict:
    out = Path(options.out)
    resume_path = options.resume_path()
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        if resume_path is None and not options.overwrite and ((out / RESUME).exists() or (out / LAST).exists()):
            raise TrainingError(f"{out}: already holds a run; continue it with --resume, or start afresh "
                                f"with --overwrite (or another --out)")
    device = dist.device

    # Lists and labels.
    train_entries = read_list(options.train_list, options.features_dir, options.labels)
    train_entries, val_entries = hold_out(train_entries, options.val_fraction, options.seed)
    normal_entries, abnormal_entries = split_labels(train_entries)
    if not normal_entries or not abnormal_entries:
        raise TrainingError(f"{options.train_list}: training needs normal and abnormal videos "
                            f"({len(normal_entries)} normal, {len(abnormal_entries)} abnormal with labels {options.labels!r})")

    # The network, its starting weights, and what stays frozen.
    settings = None
    state = None
    feature_size = _resolve_feature_size(options, train_entries, None)
    settings = _settings(options, feature_size, dist.world)
    if resume_path is not None:
        state = _read_resume(resume_path, settings)
    torch.manual_seed(options.seed)
    config = SSRLConfig(stage=options.stage, grids=tuple(options.grids), crops=options.crops,
                        feature_size=feature_size).validate()
    model = SSRL(config)
    if state is not None:
        frozen = set(state["frozen"])
        model.load_state_dict(state["model"], strict=True)
    elif options.init is not None:
        frozen = load_initial(model, options.init)
    else:
        frozen = set()
    freeze(model, frozen)
    model.to(device)
    optimizer = make_optimizer(model, options)
    start = 0
    best = {"test_auc": None, "test_step": None, "val_auc": None, "val_step": None}
    history: list[dict] = []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = options.lr, options.weight_decay
        start, best, history = int(state["step"]), dict(state["best"]), list(state["history"])
    torch.manual_seed(options.seed * 1000 + dist.rank)   # dropout differs between processes
    if state is not None:
        rngs = state["rng"]
        if len(rngs) == dist.world:
            _set_rng_state(rngs[dist.rank], device)
        else:   # a different number of processes: continue, but not bit-for-bit
            torch.manual_seed(options.seed * 1000 + dist.rank + start)
    net = _Parts(model)
    if dist.active:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    # Data: every file is checked by header before the first step.
    spec = FeatureSpec.for_model(config, patch_dirs=options.patch_dirs, layout=options.layout, segments=options.segments)
    reader = FeatureReader(spec)
    check_files(reader, train_entries + val_entries, "training")
    weights = loss_weights(options)
    k = weights.top_k(options.segments)
    batches = TrainingBatches(VideoPool(reader, normal_entries, options.cache),
                              VideoPool(reader, abnormal_entries, options.cache),
                              options.batch_size, options.seed, dist.rank, dist.world)
    val_pool = VideoPool(reader, val_entries, options.cache) if val_entries else None
    val_labels = [e.label for e in val_entries]
    test_set = None
    if options.test_list is not None:
        test_reader = FeatureReader(FeatureSpec.for_model(config, patch_dirs=options.patch_dirs, layout="snippet-major"))
        test_set = TestSet.open(test_reader, options.test_list, options.gt,
                                options.test_features_dir or options.features_dir)

    logger = _run_logger(out, append=state is not None, enabled=dist.main)
    paths = {"out": str(out), "log": str(out / LOG), "evaluations": str(out / EVALUATIONS),
             "last_checkpoint": str(out / LAST),
             "best_test_checkpoint": str(out / BEST_TEST) if test_set else None,
             "best_val_checkpoint": str(out / BEST_VAL) if val_pool else None}
    if dist.main:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(("resuming at step %d from %s" % (start, resume_path)) if state is not None else "new run")
        logger.info("options %s", json.dumps(options.to_json()))
        logger.info("stage %d grids %s crops %d F %d; %d processes (%s, %s); %d normal + %d abnormal training "
                    "videos, %d held out, %d test videos; %d trainable tensors (%d values), %d frozen",
                    config.stage, list(config.active_grids), config.crops, feature_size, dist.world,
                    dist.backend or "single", device, len(normal_entries), len(abnormal_entries), len(val_entries),
                    len(test_set.entries) if test_set else 0,
                    sum(1 for p in model.parameters() if p.requires_grad), trainable, len(frozen))

    def save_state(step: int) -> None:
        rngs = dist.gather(_rng_state(device))
        if not dist.main:
            return
        inner = model
        _save_model(inner, out / LAST)
        _atomic_save({"format": STATE_FORMAT, "step": step, "settings": settings, "frozen": sorted(frozen),
                      "model": {k: v.detach().cpu() for k, v in inner.state_dict().items()},
                      "optimizer": optimizer.state_dict(), "rng": rngs, "best": best, "history": history},
                     out / RESUME)

    def evaluate(step: int, loss: float | None, select: bool = True) -> dict | None:
        dist.share_buffers(model)   # every process scores its share with the main process's network
        test_scores = score_entries(model, test_set.reader, test_set.entries, device, dist.rank, dist.world) \
            if test_set else None
        val_scores = score_validation(model, val_pool, k, device, dist.rank, dist.world) if val_pool else None
        test_parts = dist.gather(test_scores) if test_set else None
        val_parts = dist.gather(val_scores) if val_pool else None
        if not dist.main:
            return None
        record = {"step": step, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "elapsed_s": round(time.perf_counter() - started, 2), "loss": loss}
        if test_set:
            merged = {i: s for part in test_parts for i, s in part.items()}
            result = test_set.result(merged)
            record.update(test_auc=result.auc, test_ap=result.ap)
            if select and (best["test_auc"] is None or result.auc > best["test_auc"]):
                best.update(test_auc=result.auc, test_step=step)
                _save_model(model, out / BEST_TEST)
        if val_pool:
            merged = {i: s for part in val_parts for i, s in part.items()}
            auc, ap = video_metrics([merged[i] for i in range(len(val_labels))], val_labels)
            record.update(val_auc=auc, val_ap=ap)
            if select and (best["val_auc"] is None or auc > best["val_auc"]):
                best.update(val_auc=auc, val_step=step)
                _save_model(model, out / BEST_VAL)
        record.update(best_test_auc=best["test_auc"], best_test_step=best["test_step"],
                      best_val_auc=best["val_auc"], best_val_step=best["val_step"])
        history.append(record)
        with open(out / EVALUATIONS, "a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("step %d loss %s test AUC %s AP %s val AUC %s (best test AUC %s at step %s)", step, _fmt(loss),
                    _fmt(record.get("test_auc")), _fmt(record.get("test_ap")), _fmt(record.get("val_auc")),
                    _fmt(best["test_auc"]), best["test_step"])
        return record

    if dist.main and state is None:
        (out / EVALUATIONS).write_text("")
    loader = DataLoader(_Steps(batches), batch_size=None, sampler=range(start + 1, options.steps + 1),
                        num_workers=cpu_workers(options.workers), pin_memory=device.type == "cuda",
                        worker_init_fn=_quiet_worker, generator=torch.Generator().manual_seed(options.seed))
    started = time.perf_counter()
    step, stopped, losses = start, False, []
    progress, task = _progress(options.progress and dist.main, config.stage, options.steps, start)
    console = progress.console
    if state is None and options.eval_at_start and (test_set or val_pool):
        # As the published script: the untrained network's AUC, for reference (never selected).
        record = evaluate(0, None, select=False)
        if record is not None:
            progress.update(task, auc=_fmt(record.get("test_auc", record.get("val_auc"))))
    try:
        with StopRequest() as stop, progress:
            for step_batch in loader if start < options.steps else ():
                x, _ = step_batch
                step += 1
                terms = train_step(net, model, optimizer, x.to(device, non_blocking=True), weights)
                loss = float(terms.total.detach())
                if not math.isfinite(loss):
                    raise TrainingError(f"step {step}: the loss is {loss}; lower --lr or check the features")
                losses.append(loss)
                progress.update(task, advance=1, loss=f"{loss:.4f}")
                last_step = step == options.steps
                if (step % options.eval_every == 0 and step > options.eval_after) or last_step:
                    mean_loss = float(np.mean(losses)) if losses else None
                    losses = []
                    if test_set or val_pool:
                        record = evaluate(step, mean_loss)
                        if record is not None:
                            shown = record.get("test_auc", record.get("val_auc"))
                            progress.update(task, auc=_fmt(shown))
                            if options.progress or not console.is_terminal:
                                console.print(f"step {step}: loss {_fmt(mean_loss)}  test AUC {_fmt(record.get('test_auc'))}"
                                              f"  val AUC {_fmt(record.get('val_auc'))}  best test AUC "
                                              f"{_fmt(best['test_auc'])} (step {best['test_step']})")
                    elif dist.main:
                        logger.info("step %d loss %s", step, _fmt(mean_loss))
                if step % options.save_every == 0 and not last_step:
                    save_state(step)
                if dist.any(stop.requested):
                    stopped = step < options.steps
                    break
        save_state(step)
        if dist.main:
            logger.info("%s at step %d after %.1f s; best test AUC %s (step %s, selected on the test set as the "
                        "published protocol does); best validation AUC %s (step %s)",
                        "stopped" if stopped else "finished", step, time.perf_counter() - started,
                        _fmt(best["test_auc"]), best["test_step"], _fmt(best["val_auc"]), best["val_step"])
    finally:
        _close_logger(logger)
    return {**paths, "steps": step, "stopped": stopped, "best_test_auc": best["test_auc"],
            "best_test_step": best["test_step"], "best_val_auc": best["val_auc"], "best_val_step": best["val_step"],
            "history": history}


def main(argv=None) -> int:
    try:
        options = options_from_args(argv)
        result = train(options)
    except (OptionsError, TrainingError, FeatureSetError, CheckpointError, EvaluationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{'stopped' if result['stopped'] else 'finished'} at step {result['steps']}: "
              f"best test AUC {_fmt(result['best_test_auc'])} (step {result['best_test_step']}, test-selected); "
              f"best validation AUC {_fmt(result['best_val_auc'])}; checkpoints in {result['out']}")
    return 130 if result["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
