"""Fitting: training recipes (``recipes``), training on a split (``train``, writing a run folder and its
``train_log``), the steps from a run to a shippable model (``runs``: export, calibrate) and shipping the best run
into ``models/`` with its card (``shipping``)."""
