"""Evaluation: methods side by side on the same fields and rules.

``metrics`` (pixel and bacillus level), ``truth`` (ground truth of a field), ``heatmap_cache``, ``methods`` (the
dense model through the service's engine, with the object filter, the colour baseline from ``baselines``),
``scoring`` (tallies and sweeps), ``crops`` with ``patch_scan`` (the same model patch by patch), ``evaluate``
(the orchestration), ``report`` and ``report_schema`` (report.md, curves, gallery; the shape of report.json).
"""
