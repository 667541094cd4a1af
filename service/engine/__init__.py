"""Inference engine: numpy + ONNX Runtime only (no HTTP, no Pillow, no TensorFlow).

``model`` loads an ONNX model and reads its contract from the metadata; ``tiling`` plans exact halo tiles;
``mosaic`` runs a field through the model tile by tile and reassembles the heatmap without blending.
"""
