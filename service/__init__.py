"""The bacillus segmentation service (ONNX Runtime; never imports TensorFlow or ``training``)."""
