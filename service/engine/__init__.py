"""Inference engine: numpy, Pillow and ONNX Runtime only (no HTTP, no settings, no TensorFlow).

The runtime that serving and training share, so nothing is computed two ways (no train/serve skew):

* ``image_io`` decodes image files into the RGB arrays the network sees, within limits;
* ``defaults`` holds the engine's default values; ``errors`` the errors it raises (``EngineError`` and kin);
* ``model`` loads the dense ONNX model and reads its contract from the metadata; ``normalisation`` brings a field
  to the model's reference background; ``tiling`` plans exact halo tiles; ``mosaic`` runs a field through the
  model tile by tile and reassembles the heatmap without blending; ``fast`` is fast mode's coarse pass and
  refinement; ``modes`` names the modes and holds the one rule choosing a request's mode; ``passes`` gives each
  mode one pass object (exact, fast);
* ``candidates`` cuts the heatmap into objects and measures them; ``object_filter`` scores them;
  ``postprocess`` turns them into detected objects (kept bacilli, rejected candidates) with outlines;
  ``geojson`` writes them for QuPath; ``grading`` grades a slide (WHO/IUATLD) from its counts per field;
* ``segmenter`` is the one entry point (a field in, its heatmap, masks and bacilli out, with where they came
  from); ``loading`` loads and checks a model with its object filter; ``model_folder`` reads model folders
  (layout, ids, the default model).
"""
