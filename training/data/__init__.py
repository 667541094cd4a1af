"""Data: annotated micrographs in, labelled pixels and patches out.

``annotations`` (box, point-free mask and the three readers/writers), ``dataset`` (pairing images with annotation
files; images read with the service's decoder), ``box_masks`` (bacillus pixels derived from boxes), ``colour``,
``sampling`` (the paper's patch sampler) and ``hard_negatives`` (pools of hard background pixels), ``patches``
(patch sets of a split, on disk), ``split`` (train/validation/test by field), ``synthetic`` (small ZN-like fields
with exact masks), ``overlays`` and ``mask_review`` (pictures for a person to check the masks).
"""
