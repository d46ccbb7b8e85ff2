#!/usr/bin/env bash
# Install everything the tests need and run them: the command README.md gives and .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests drive for real: OpenCV's sample videos, GStreamer's RTSP server, tmux, FFmpeg.
APT_PACKAGES=(ffmpeg opencv-doc tmux
              python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The CPU build of PyTorch first, so that the project's `torch>=2.1` does not pull a CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
exec python -m pytest "$@"
