"""Options of a training run: one dataclass, filled from defaults, then a TOML file
(`--config`), then command-line flags, each later source winning. Every field is a flag
(`features_dir` is `--features-dir`) and a TOML key (either spelling). Relative paths are
taken from the working directory, in a TOML file as on the command line."""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from monitor.errors import add_debug_flag
from training.data import LAYOUTS

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib

RESUME_FILE = "resume.pt"  # the run's training state in its --out
RESUME_LATEST = "latest"   # `--resume` without a path: the run's own RESUME_FILE


class OptionsError(ValueError):
    """A bad option value or configuration file; the message names the file and key."""


def _opt(default, help: str, flag: str | None = None, flag_help: str | None = None):
    """`help` says what the option (a TOML key) means; `flag_help` what its flag does, where the
    flag turns the option off (`--no-progress` for `progress = true`)."""
    return field(default=default, metadata={"help": help, "flag": flag, "flag_help": flag_help})


@dataclass
class TrainOptions:
    # What to train on -----------------------------------------------------------------------
    train_list: Path | None = _opt(None, "training list: one feature file per line (the published lists put abnormal videos first)")
    features_dir: Path | None = _opt(None, "directory the training list's names are relative to (default: the list's directory)")
    labels: str = _opt("list", "video labels: 'shanghai' (first 63 abnormal), 'ucf' (first 810), N (first N), or 'list' (lines 'path,label')")
    test_list: Path | None = _opt(None, "test list, in ground-truth order; with --gt, the frame AUC is measured on it")
    test_features_dir: Path | None = _opt(None, "directory the test list's names are relative to (default: --features-dir)")
    gt: Path | None = _opt(None, "frame ground truth .npy [frames] of 0/1 for the test list")
    patch_dirs: tuple[str, ...] = _opt((), "more directories holding <video>_patch{S}_i3d.npy companions ('{grid}' is replaced by the grid)")
    layout: str = _opt("auto", f"training file layout: {', '.join(LAYOUTS)} ([T, crops, F] or [crops, 32, F])")
    segments: int = _opt(32, "segments every training video is resampled to")
    cache: bool = _opt(False, "keep the resampled training videos in memory (each data-loading worker its own copy: "
                              "best with --workers 0)")
    workers: int = _opt(2, "data-loading worker processes per training process")
    # The network ----------------------------------------------------------------------------
    stage: int = _opt(1, "SSRL stage 1-4 (stage n uses the first n-1 grids)")
    grids: tuple[int, ...] = _opt((23, 35, 47), "grid set, rows·columns, in stage order")
    crops: int = _opt(10, "crops per snippet in the features (10 or 1)")
    feature_size: int | None = _opt(None, "feature size F (default: read from --init or the first training file)")
    init: Path | None = _opt(None, "checkpoint of stage n-1 to start stage n from (its tensors are loaded and frozen); "
                                   "a checkpoint of stage n itself fine-tunes it with nothing frozen")
    from_scratch: bool = _opt(False, "train a stage 2-4 network from random weights, every module trainable")
    # Optimisation ---------------------------------------------------------------------------
    steps: int = _opt(15000, "training steps (published scripts: 150000)")
    batch_size: int = _opt(4, "normal and abnormal videos per step and process (B normal + B abnormal)")
    lr: float = _opt(1e-3, "Adam learning rate")
    weight_decay: float = _opt(5e-3, "Adam weight decay")
    seed: int = _opt(10, "random seed (data order, dropout, initial weights)")
    top_k: int | None = _opt(None, "snippets per video chosen by feature magnitude (default: segments // 10)")
    mask_dropout: float = _opt(0.7, "dropout probability of the magnitude mask")
    alpha: float = _opt(1e-4, "weight of the feature-magnitude term")
    margin: float = _opt(100.0, "feature-magnitude margin of abnormal videos")
    sparsity: float = _opt(8e-3, "weight of the sparsity term")
    smoothness: float = _opt(8e-4, "weight of the smoothness term")
    # Evaluation and output --------------------------------------------------------------------
    eval_every: int = _opt(5, "evaluate every N steps")
    eval_after: int = _opt(0, "first evaluation after this step (published scripts: 50)")
    eval_at_start: bool = _opt(True, "evaluate the untrained network first, for reference (never selected)", flag="--no-eval-at-start",
                               flag_help="skip evaluating the untrained network first")
    val_fraction: float = _opt(0.0, "hold out this share of the training list (per label) for honest checkpoint selection")
    out: Path = _opt(Path("runs/ssrl"), "output directory: checkpoints, train.log, evaluations.jsonl, resume.pt")
    save_every: int = _opt(1000, "write the resume state (and last.pkl) every N steps")
    resume: str | None = _opt(None, "continue an interrupted run: its resume.pt (default: OUT/resume.pt)")
    overwrite: bool = _opt(False, "start afresh in an output directory that already holds a run")
    device: str = _opt("auto", "auto, cpu, cuda (with torchrun: each process its own GPU)")
    progress: bool = _opt(True, "show a progress bar", flag="--no-progress", flag_help="no progress bar (plain log lines)")

    # ------------------------------------------------------------------------------------------
    def resume_path(self) -> Path | None:
        if self.resume is None:
            return None
        return self.out / RESUME_FILE if self.resume == RESUME_LATEST else Path(self.resume)

    def check(self) -> "TrainOptions":
        """Raise OptionsError naming the option when values cannot make a run."""
        def bad(name, why):
            raise OptionsError(f"option {name!r} ({getattr(self, name)!r}): {why}")
        if self.train_list is None:
            bad("train_list", "a training list is required")
        if (self.test_list is None) != (self.gt is None):
            bad("test_list" if self.test_list is None else "gt", "give --test-list and --gt together")
        if self.stage not in (1, 2, 3, 4):
            bad("stage", "must be 1-4")
        if len(self.grids) < self.stage - 1:
            bad("grids", f"stage {self.stage} needs {self.stage - 1} grids")
        if self.stage > 1 and self.init is None and not self.from_scratch:
            bad("init", f"stage {self.stage} starts from the stage-{self.stage - 1} checkpoint: give --init "
                        f"(or --from-scratch to train every module from random weights)")
        if self.init is not None and self.from_scratch:
            bad("from_scratch", "--init and --from-scratch exclude each other")
        for name in ("steps", "batch_size", "eval_every", "save_every", "segments", "crops"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        for name in ("eval_after", "workers"):
            if getattr(self, name) < 0:
                bad(name, "must not be negative")
        if self.lr <= 0:
            bad("lr", "must be positive")
        if not 0 <= self.val_fraction < 1:
            bad("val_fraction", "must be in [0, 1)")
        if not 0 <= self.mask_dropout < 1:
            bad("mask_dropout", "must be in [0, 1)")
        if self.layout not in LAYOUTS:
            bad("layout", f"use one of {', '.join(LAYOUTS)}")
        if self.feature_size is not None and (self.feature_size < 8 or self.feature_size % 8):
            bad("feature_size", "must be a positive multiple of 8")
        return self

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


# -- field kinds, shared by the TOML reader and the flag parser ---------------------------------

def _kinds() -> dict[str, tuple[type, bool, bool]]:
    """field -> (base type, optional, tuple-of)."""
    hints = typing.get_type_hints(TrainOptions)
    kinds = {}
    for f in fields(TrainOptions):
        tp, optional = hints[f.name], False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp, optional = args[0], True
        if typing.get_origin(tp) is tuple:
            kinds[f.name] = (typing.get_args(tp)[0], optional, True)
        else:
            kinds[f.name] = (tp, optional, False)
    return kinds


def _coerce(name: str, value, source: str):
    base, optional, many = _kinds()[name]
    if name == "resume" and value is True:
        return RESUME_LATEST
    if name == "resume" and value is False:
        return None

    def one(v):
        if base is bool:
            ok = isinstance(v, bool)
        elif base is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif base is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        elif name == "labels":
            ok = isinstance(v, (str, int)) and not isinstance(v, bool)
            v = str(v)
        else:   # str and Path
            ok = isinstance(v, str)
        if not ok:
            raise OptionsError(f"{source}: key '{name}': expected {base.__name__}, found {v!r}")
        return float(v) if base is float else Path(v) if base is Path else v

    if many:
        if not isinstance(value, list):
            raise OptionsError(f"{source}: key '{name}': expected a list of {base.__name__}, found {value!r}")
        return tuple(one(v) for v in value)
    return one(value)


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise OptionsError(f"{path}: no such configuration file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OptionsError(f"{path}: not valid TOML ({exc})") from exc
    known = {f.name for f in fields(TrainOptions)}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise OptionsError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(known))})")
        values[name] = _coerce(name, value, str(path))
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Staged weakly supervised SSRL training (stage 1, or stage n from stage n-1). "
                    "Runs on one process, or on many with torchrun (DistributedDataParallel).")
    p.add_argument("--config", type=Path, help="TOML file whose keys are these options (flags override it)")
    kinds = _kinds()
    for f in fields(TrainOptions):
        base, optional, many = kinds[f.name]
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        shown = f.default if not isinstance(f.default, tuple) else " ".join(map(str, f.default))
        help = (f.metadata["flag_help"] or f.metadata["help"]) + (f" (default: {shown})" if f.default not in (None, ()) and not isinstance(f.default, bool) else "")
        kw = {"dest": f.name, "default": argparse.SUPPRESS, "help": help}
        if f.name == "layout":
            kw["choices"] = LAYOUTS
        elif f.name == "stage":
            kw["choices"] = (1, 2, 3, 4)
        if f.name == "resume":
            p.add_argument(flag, nargs="?", const=RESUME_LATEST, metavar="STATE", **kw)
        elif base is bool:
            p.add_argument(flag, action="store_false" if f.default else "store_true", **kw)
        elif many:
            p.add_argument(flag, nargs="+", type=base, **kw)
        else:
            p.add_argument(flag, type=str if f.name == "labels" else base, **kw)
    add_debug_flag(p)
    return p


def options_from_args(argv=None) -> TrainOptions:
    args = vars(build_parser().parse_args(argv))
    config = args.pop("config", None)
    args.pop("debug", None)  # read by monitor.errors.guarded, not a training option
    values = read_toml(config) if config is not None else {}
    for name, value in args.items():
        values[name] = tuple(value) if isinstance(value, list) else value
    return replace(TrainOptions(), **values)
