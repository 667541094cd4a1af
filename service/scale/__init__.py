"""Beyond one machine: the same engine run over a slide archive on a Ray cluster (``python -m service batch-ray``).

Optional: it needs the ``ray`` extra (``pip install -e .[ray]``); the service itself never imports this package.
:mod:`service.scale.inputs` lists the fields (a folder tree, a slide per folder, or a list file of paths and URIs)
and reads their bytes; :mod:`service.scale.ray_batch` runs :class:`~service.engine.segmenter.Segmenter` in a Ray
Data ``map_batches`` over them, writes per-field Parquet and per-slide grades, and resumes where it stopped.
"""
