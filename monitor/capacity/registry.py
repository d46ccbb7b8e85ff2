"""The measurements of one bench run, in the order they run (later ones use earlier results:
fractions of the machine's peak, the backbone's inputs), with the keys each reports."""
from __future__ import annotations

from monitor.capacity import backbone, head, machine, precision, preprocessing, throughput, torch_twin

# (title, keys -> meaning, measure(bench) -> {key: value})
MEASUREMENTS = [
    ("machine", machine.KEYS, machine.measure),
    ("backbone", backbone.KEYS, backbone.measure),
    ("backbone against PyTorch", torch_twin.KEYS, torch_twin.measure),
    ("int8 against fp32", precision.KEYS, precision.measure),
    ("head", head.KEYS, head.measure),
    ("preprocessing", preprocessing.KEYS, preprocessing.measure),
    ("engine", throughput.KEYS, throughput.measure),
    ("latency", throughput.LATENCY_KEYS, throughput.measure_latency),
    ("capacity", throughput.CAMERA_KEYS, throughput.measure_cameras),
    ("memory", machine.MEMORY_KEYS, machine.measure_memory),
]

# What every run says about itself, before the measurements.
SETTINGS_KEYS = {
    "model": "the bundle measured", "provider": "ONNX Runtime execution provider in use", "stage": "SSRL stage",
    "crops": "crops per snippet", "patches": "patch clips per snippet", "threads": "ONNX Runtime intra-op threads per graph run",
    "workers": "graph runs at once: the engine's scoring workers (providers.scoring_layout)",
    "cameras": "N, the cameras of the engine and latency runs", "seconds": "length of each engine run (s)",
    "video": "what the cameras play: 'synthetic' test videos, or the --video recordings",
    "video_size": "its frames' width and height", "video_codec": "its codec (FourCC)",
    "video_fps": "its recorded frame rate (paced runs play it at 25 fps)",
}
