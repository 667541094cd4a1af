"""The object filter: labelled candidates (``samples``) and the classifier trained on them, exported as ONNX for
the service (``classifier``)."""
