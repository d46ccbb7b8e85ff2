#!/usr/bin/env bash
# GPU figures for the README (issue 14 §4), for a session that has a GPU machine: the full-size
# seeded bundle (I3D-ResNet50 + stage-4 SSRL, 59 clips of 16 x 224 x 224 a snippet), fp32 and
# fp16, each benched on CUDA and on TensorRT. Needs the project installed with its test extra
# (torch for the seeded export) and onnxruntime-gpu with CUDA (and TensorRT) libraries.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default runs/gpu; $OUT where the device tool sets it
#
# Writes OUT_DIR/gpu.txt (nvidia-smi), bench-{fp32,fp16}-{cuda,tensorrt}.json (one bench JSON
# object each: backbone_clips_per_s, backbone_gflops, backbone_fraction_of_peak against the
# GEMM peak measured on the same provider, cameras_at_25fps, ...) and summary.txt. TensorRT
# builds an engine per graph and input shape on its first run (minutes for I3D) and caches it
# under $SSRL_TRT_CACHE (default here: WORK/trt-cache), one directory per graph content.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-runs/gpu}}
WORK=${WORK:-runs/gpu-work}
CAMERAS=${CAMERAS:-16}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
mkdir -p "$OUT_DIR" "$WORK"
export SSRL_TRT_CACHE=${SSRL_TRT_CACHE:-$WORK/trt-cache} PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
python -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" | tee -a "$OUT_DIR/gpu.txt"

[ -f "$WORK/full-fp32/manifest.json" ] || python -m benchmarks.seeded_bundle --out "$WORK/full-fp32"
[ -f "$WORK/full-fp16/manifest.json" ] || python -m export --bundle "$WORK/full-fp32" --fp16 --calibration-snippets 4 --out "$WORK/full-fp16"

for precision in fp32 fp16; do
  for provider in cuda tensorrt; do
    echo "== $precision on $provider"
    python run_monitor.py bench --model "$WORK/full-$precision" --providers "$provider,cpu" \
      --cameras "$CAMERAS" --seconds "$SECONDS_PER_RUN" --work "$WORK/videos" --json \
      > "$OUT_DIR/bench-$precision-$provider.json" || echo "bench $precision $provider failed: $?"
  done
done

python - "$OUT_DIR" <<'EOF' | tee "$OUT_DIR/summary.txt"
import json, sys
from pathlib import Path
keys = ["provider", "backbone_clips_per_s", "backbone_gflops", "machine_peak_gflops", "backbone_fraction_of_peak",
        "engine_snippets_per_s", "engine_efficiency", "latency_ms_p50", "cameras_at_25fps"]
print("| bundle | " + " | ".join(keys) + " |")
print("|---" * (len(keys) + 1) + "|")
for path in sorted(Path(sys.argv[1]).glob("bench-*.json")):
    try:
        r = json.loads(path.read_text())
    except ValueError:
        print(f"| {path.stem} | (no result) |")
        continue
    print(f"| {path.stem} | " + " | ".join(str(r.get(k)) for k in keys) + " |")
EOF
