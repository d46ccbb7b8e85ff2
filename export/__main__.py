"""python -m export [--checkpoint CKPT] [--backbone I3D.pth] --out DIR [--stage N]"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from monitor.errors import add_debug_flag, guarded
from monitor.model.manifest import DEFAULT_THRESHOLD, DEFAULT_WINDOW
from monitor.video.preprocess import RESIZE_MODES, Geometry, GeometryError

DEFAULTS = Geometry()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export", description="Export SSRL weights to a model bundle (ONNX + manifest.json).")
    p.add_argument("--checkpoint", type=Path, help="SSRL checkpoint (.pkl/.pth state dict, published or ours)")
    p.add_argument("--backbone", type=Path, help="I3D-ResNet50 weight file (i3d_r50_kinetics.pth): adds backbone.onnx")
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
    g = p.add_argument_group("preprocessing recorded with the backbone")
    g.add_argument("--resize", choices=RESIZE_MODES, default="fast",
                   help="resize mode the live monitor uses (default fast; extraction defaults to reference)")
    g.add_argument("--frame-size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"), default=list(DEFAULTS.frame_size))
    g.add_argument("--crop-size", type=int, default=DEFAULTS.crop_size)
    g.add_argument("--patch-size", type=int, default=DEFAULTS.patch_size)
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)  # whole lines: error messages stay greppable
    if args.checkpoint is None and args.backbone is None:
        console.print("[red]error:[/] give --checkpoint and/or --backbone")
        return 2
    from export.backbone import export_backbone
    from export.bundle_writer import write_bundle
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
            with console.status("exporting the I3D backbone to ONNX"):
                graphs["backbone"] = export_backbone(backbone, args.out, geometry, backbone.feature_size)
            preprocessing = geometry.to_dict()
            source["backbone"] = args.backbone.name
        with console.status("writing the bundle"):
            manifest = write_bundle(args.out, model, graphs=graphs, stage=0, crops=args.crops,
                                    feature_size=backbone.feature_size if backbone is not None else None,
                                    preprocessing=preprocessing, source=source,
                                    window=args.window, threshold=args.threshold,
                                    min_snippets=args.min_snippets, training_data=args.training_data)
    except (CheckpointError, I3DError, GeometryError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    what = f"stage {manifest.stage}, grids {manifest.grids}" if manifest.stage else "backbone only (stage 0)"
    console.print(f"wrote {args.out}: {what}, {len(manifest.graphs)} graphs ({', '.join(manifest.graphs)}), "
                  f"{size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
