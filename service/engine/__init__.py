"""Inference engine: numpy, Pillow and ONNX Runtime only (no HTTP, no settings, no TensorFlow).

The runtime that serving and training share, so nothing is computed two ways (no train/serve skew):

* ``image_io`` decodes image files into the RGB arrays the network sees, within limits;
* ``model`` loads the dense ONNX model and reads its contract from the metadata; ``tiling`` plans exact halo
  tiles; ``mosaic`` runs a field through the model tile by tile and reassembles the heatmap without blending;
* ``candidates`` cuts the heatmap into objects and measures them; ``object_filter`` scores them;
  ``postprocess`` turns them into bacilli with outlines; ``geojson`` writes them for QuPath;
* ``segmenter`` is the one entry point (a field in, its heatmap, masks and bacilli out, with where they came
  from); ``loading`` loads and checks a model with its object filter; ``model_folder`` reads model folders
  (layout, ids, the default model).
"""
