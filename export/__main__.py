"""python -m export [--checkpoint CKPT] [--backbone I3D.pth] --out DIR [--stage N] [--uint8-input]
                 [--int8 --calibration VIDEO_DIR | --fp16 [--calibration VIDEO_DIR]]
   python -m export --bundle DIR (--int8 --calibration VIDEO_DIR | --fp16 | --uint8-input) --out DIR2
   python -m export --bundle DIR --temporal-at --out DIR2
   (--uint8-input alone needs no PyTorch: graph surgery with the onnx library)"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from monitor.errors import add_debug_flag, guarded
from export.convert import DEFAULT_SNIPPETS, HELD_OUT_EVERY
from export.quantize import DEFAULT_MIN_COSINE, METHODS
from monitor.model.manifest import DEFAULT_THRESHOLD, DEFAULT_WINDOW
from monitor.video.preprocess import RESIZE_MODES, Geometry, GeometryError

DEFAULTS = Geometry()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export", description="Export SSRL weights to a model bundle (ONNX + manifest.json).")
    p.add_argument("--checkpoint", type=Path, help="SSRL checkpoint (.pkl/.pth state dict, published or ours)")
    p.add_argument("--backbone", type=Path, help="I3D-ResNet50 weight file (i3d_r50_kinetics.pth): adds backbone.onnx")
    p.add_argument("--bundle", type=Path,
                   help="an existing bundle to convert (with --int8, --fp16 or --uint8-input); it is left as it is")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--stage", type=int, choices=[1, 2, 3, 4], help="expected stage (read from the tensor names when not given)")
    p.add_argument("--grids", type=int, nargs="+", help="grid set, rows·columns (default: 23 35 47)")
    p.add_argument("--crops", type=int, default=10, help="crops per snippet the model was trained on (10 or 1)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="live sliding window, snippets")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="default alert threshold")
    p.add_argument("--min-snippets", type=int, default=1,
                   help="default minimum alert duration: consecutive snippets at or above the threshold")
    p.add_argument("--training-data", default="", metavar="TEXT",
                   help="what footage the model was trained on, recorded in the manifest (e.g. 'ShanghaiTech'; "
                        "'synthetic' marks a model of the synthetic camera only, which the monitor warns about "
                        "on real cameras)")
    q = p.add_argument_group("precision (default fp32)")
    q.add_argument("--int8", action="store_true",
                   help="statically quantise the backbone to int8 for CPUs (needs --calibration)")
    q.add_argument("--fp16", action="store_true", help="every graph in fp16 for GPUs, inputs and outputs as they were")
    q.add_argument("--calibration", type=Path, metavar="VIDEO_DIR",
                   help="videos (a file or a directory) to calibrate int8 on, or to measure fp16 on "
                        "(default for fp16: the synthetic camera)")
    q.add_argument("--calibration-snippets", type=int, default=DEFAULT_SNIPPETS,
                   help=f"16-frame snippets taken from the videos: int8 calibrates on them, every {HELD_OUT_EVERY}th "
                        f"held out to check its features on; fp16 is measured on them (default {DEFAULT_SNIPPETS})")
    q.add_argument("--calibration-method", choices=list(METHODS), default="percentile",
                   help="how activation ranges are set from the calibration clips (default percentile)")
    q.add_argument("--int8-min-cosine", type=float, default=DEFAULT_MIN_COSINE,
                   help="int8 keeps early layers in fp32 until its features' mean cosine to fp32 on the held-out "
                        f"clips reaches this (default {DEFAULT_MIN_COSINE})")
    p.add_argument("--uint8-input", action="store_true",
                   help="the backbone takes uint8 frames [N, T, H, W, 3] as decoded (BGR) and scales them itself")
    p.add_argument("--temporal-at", action="store_true",
                   help="with --bundle: add the temporal_at graph (the temporal head at the reported position only, "
                        "what the live engine runs) to a bundle exported before it existed, read back from its "
                        "temporal graph")
    g = p.add_argument_group("preprocessing recorded with the backbone")
    g.add_argument("--resize", choices=RESIZE_MODES, default="fast",
                   help="resize mode the live monitor uses (default fast; extraction defaults to reference)")
    g.add_argument("--frame-size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"), default=list(DEFAULTS.frame_size))
    g.add_argument("--crop-size", type=int, default=DEFAULTS.crop_size)
    g.add_argument("--patch-size", type=int, default=DEFAULTS.patch_size)
    add_debug_flag(p)
    return p.parse_args(argv)


def precision_problem(args) -> str | None:
    """What is wrong with the precision flags, in one line, or None."""
    if args.int8 and args.fp16:
        return "--int8 and --fp16: choose one (int8 is for CPUs, fp16 for GPUs)"
    if args.bundle is not None:
        if args.checkpoint is not None or args.backbone is not None:
            return "--bundle converts an existing bundle: leave out --checkpoint and --backbone"
        if args.temporal_at and (args.int8 or args.fp16 or args.uint8_input):
            return "--temporal-at: give it alone, then convert the bundle it writes"
        if not (args.int8 or args.fp16 or args.uint8_input or args.temporal_at):
            return "--bundle: say what to convert it to, --int8, --fp16 or --uint8-input (or --temporal-at)"
        if args.out.resolve() == args.bundle.resolve():
            return f"--out {args.out}: must differ from --bundle (the source bundle is left as it is)"
    if args.temporal_at and args.bundle is None:
        return "--temporal-at is for --bundle DIR (a fresh export writes temporal_at already)"
    if args.int8 and args.calibration is None:
        return "--int8: give --calibration VIDEO_DIR, videos like the cameras' to calibrate on"
    if args.int8 and args.bundle is None and args.backbone is None:
        return "--int8 quantises the backbone: give --backbone (or --bundle with a backbone)"
    if args.calibration is not None and not (args.int8 or args.fp16):
        return "--calibration is for --int8 or --fp16"
    if args.calibration is not None and not args.calibration.exists():
        return f"--calibration {args.calibration}: no such video file or directory"
    if args.calibration_snippets < 2:
        return f"--calibration-snippets {args.calibration_snippets}: need at least 2 (one is held out)"
    if not 0.0 < args.int8_min_cosine <= 1.0:
        return f"--int8-min-cosine {args.int8_min_cosine}: must lie in (0, 1]"
    return None


def convert(args, console, source: Path, out: Path, label: str | None = None):
    """Write `out` as the --int8 or --fp16 version of bundle `source`."""
    from export.convert import fp16_bundle, int8_bundle
    log = console.print
    if args.int8:
        with console.status("quantising the backbone to int8"):
            return int8_bundle(source, out, args.calibration, snippets=args.calibration_snippets,
                               min_cosine=args.int8_min_cosine, method=args.calibration_method, label=label, log=log)
    with console.status("converting the graphs to fp16"):
        return fp16_bundle(source, out, args.calibration, snippets=args.calibration_snippets, label=label, log=log)


def report_precision(console, manifest) -> None:
    for name, spec in manifest.graphs.items():
        c = spec.conversion
        if spec.precision == "int8" and name == "backbone":
            line = (f"int8 backbone: {c['int8_layers']} layers int8, {len(c['fp32_layers'])} fp32; feature cosine "
                    f"to fp32 {c['feature_cosine_mean']:.4f} (min {c['feature_cosine_min']:.4f}) on "
                    f"{c['held_out_clips']} held-out clips")
            console.print(line if c["met"] else f"[yellow]warning:[/] {line}: below the "
                          f"--int8-min-cosine {c['target_cosine']} target even with half the layers in fp32")
        elif spec.precision == "fp16" and name in ("temporal", "backbone") and "measured" in c:
            m = c["measured"]
            if name == "temporal":
                console.print(f"fp16 scores vs fp32 on the same features: max |difference| "
                              f"{m['score_max_abs_diff']:.2e} over {m['snippets']} snippets"
                              + (f"; end to end {m['end_to_end_score_max_abs_diff']:.2e}"
                                 if "end_to_end_score_max_abs_diff" in m else ""))
            elif "temporal" not in manifest.graphs:
                console.print(f"fp16 features vs fp32: mean cosine {m['feature_cosine_mean']:.6f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)  # whole lines: error messages stay greppable
    problem = precision_problem(args)
    if problem is not None:
        console.print(f"[red]error:[/] {problem}")
        return 2
    if args.bundle is not None:
        return convert_existing(args, console)
    if args.checkpoint is None and args.backbone is None:
        console.print("[red]error:[/] give --checkpoint and/or --backbone")
        return 2
    from export.backbone import export_backbone
    from export.bundle_writer import write_bundle
    from export.footage import FootageError
    from export.quantize import QuantizeError
    from monitor.model.manifest import BundleError
    from training.checkpoint import CheckpointError, load_model
    from training.i3d import I3DError, load_i3d

    started = time.perf_counter()
    model = backbone = None
    graphs, preprocessing, source = {}, None, {}
    try:
        if args.checkpoint is not None:
            with console.status("loading checkpoint"):
                model = load_model(args.checkpoint, stage=args.stage, grids=args.grids, crops=args.crops)
            source["checkpoint"] = args.checkpoint.name
        if args.backbone is not None:
            with console.status("loading I3D weights"):
                backbone = load_i3d(args.backbone)
            if model is not None and model.config.feature_size != backbone.feature_size:
                console.print(f"[red]error:[/] {args.backbone} gives {backbone.feature_size}-d features but "
                              f"{args.checkpoint} expects feature_size {model.config.feature_size}")
                return 2
            crops = model.config.crops if model is not None else args.crops
            grids = model.config.active_grids if model is not None else (args.grids or DEFAULTS.grids)
            geometry = Geometry(frame_size=tuple(args.frame_size), crop_size=args.crop_size, crops=crops,
                                grids=tuple(grids), patch_size=args.patch_size, resize=args.resize)
            preprocessing = geometry.to_dict()
            source["backbone"] = args.backbone.name

        def write_fp32(out: Path):
            if backbone is not None:
                with console.status("exporting the I3D backbone to ONNX"):
                    graphs["backbone"] = export_backbone(backbone, out, geometry, backbone.feature_size)
            with console.status("writing the bundle"):
                return write_bundle(out, model, graphs=graphs, stage=0, crops=args.crops,
                                    feature_size=backbone.feature_size if backbone is not None else None,
                                    preprocessing=preprocessing, source=source,
                                    window=args.window, threshold=args.threshold,
                                    min_snippets=args.min_snippets, training_data=args.training_data)

        if args.uint8_input and backbone is not None:
            from export.pixel_input import upgrade_bundle
            fp32 = write_fp32
            write_fp32 = lambda out: (fp32(out), upgrade_bundle(out, out))[1]  # noqa: E731
        if args.int8 or args.fp16:
            from export.convert import converted_fresh
            manifest = converted_fresh(write_fp32, args.out,
                                       lambda fp32, out: convert(args, console, fp32, out, label="fp32 export"))
            report_precision(console, manifest)
        else:
            manifest = write_fp32(args.out)
    except (CheckpointError, I3DError, GeometryError, BundleError, FootageError, QuantizeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    what = f"stage {manifest.stage}, grids {manifest.grids}" if manifest.stage else "backbone only (stage 0)"
    console.print(f"wrote {args.out}: {what}, {len(manifest.graphs)} graphs ({', '.join(manifest.graphs)}), "
                  f"{size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
    return 0


def convert_existing(args, console) -> int:
    """--bundle DIR --int8/--fp16 --out DIR2."""
    from export.footage import FootageError
    from export.quantize import QuantizeError
    from monitor.model.bundle import Bundle
    from monitor.model.manifest import BundleError
    started = time.perf_counter()
    try:
        source = Bundle(args.bundle, providers="cpu")  # a source that does not load is named before any work
        if args.temporal_at:
            from export.temporal_weights import add_temporal_at
            with console.status("reading the temporal head back and exporting temporal_at"):
                manifest = add_temporal_at(source, args.out)
        elif args.uint8_input:
            manifest = pixel_version(args, console)
        else:
            manifest = convert(args, console, args.bundle, args.out)
        Bundle(args.out, providers="cpu")
    except (BundleError, FootageError, QuantizeError, GeometryError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    report_precision(console, manifest)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    what = " ".join(w for w, on in (("int8", args.int8), ("fp16", args.fp16), ("uint8-input", args.uint8_input),
                                    ("temporal-at", args.temporal_at)) if on)
    console.print(f"wrote {args.out}: {what} version of {args.bundle}, "
                  f"{size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
    return 0


def pixel_version(args, console):
    """--bundle DIR --uint8-input [--int8 | --fp16]: the backbone given a pixel input (onnx
    graph surgery, no PyTorch), then converted to the precision asked for, if any."""
    import tempfile

    from export.pixel_input import upgrade_bundle
    if not (args.int8 or args.fp16):
        return upgrade_bundle(args.bundle, args.out)
    with tempfile.TemporaryDirectory(prefix="ssrl-pixels-") as tmp:
        upgrade_bundle(args.bundle, Path(tmp) / "pixels")
        return convert(args, console, Path(tmp) / "pixels", args.out)


if __name__ == "__main__":
    sys.exit(guarded(main))
