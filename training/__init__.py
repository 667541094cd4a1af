"""Offline training: annotated micrographs → patches → the paper's patch CNN → dense ONNX model in models/.

The service never imports this package; the two meet only through the model file.
"""
