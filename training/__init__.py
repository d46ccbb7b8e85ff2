"""Training side of the SSRL monitor: the PyTorch network, staged training, evaluation,
the I3D backbone and feature extraction. Only `export` imports this package; the live
monitor never does."""
