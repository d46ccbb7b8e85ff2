"""The model bundle: manifest.json (the contract with export/), its ONNX graphs and the
ONNX Runtime providers that run them, offline scoring and the published feature files.

Ground package: imports none of the other monitor packages, and never torch or training/."""
