"""The model: the paper's patch CNN (``patch_cnn``), its strided-kernel conversion into a dense network with the
same weights (``to_fcn``), Platt calibration folded into the last convolution (``calibration``) and the ONNX
export with the metadata the service reads (``export``)."""
