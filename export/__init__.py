"""Checkpoints and I3D weights to a model bundle: ONNX graphs plus manifest.json."""
