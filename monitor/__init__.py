"""The live SSRL monitor: ONNX Runtime, OpenCV, pyzmq and rich only (no PyTorch)."""
__version__ = "0.1.0"
