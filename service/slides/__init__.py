"""Slides: named sets of fields graded together on the WHO/IUATLD scale, reviewed by a technician and signed.

* ``model``: the domain (a slide, its fields, each field's objects and their review, signatures, history);
* ``store``: the SQLite store of that domain (schema, migrations of older stores);
* ``intake``: how a field's per-field summary enters a slide (the one place the domain meets the wire schema);
* ``gallery``: the slide's candidates ranked across its fields, for a person to confirm or reject;
* ``report``: a slide's report and grade, automatic and reviewed, with the decision
  (:mod:`service.engine.slide_decision`: positive / negative / review, only where the evidence covers it), as
  clients read it;
* ``exports``: counts CSV, QuPath GeoJSON, annotations that training reads, the printable report.

The routes are in :mod:`service.api.routes.slides` (create, add fields, read, delete),
:mod:`service.api.routes.review` (decisions, additions, signatures), :mod:`service.api.routes.slide_exports`
(exports and the field image) and :mod:`service.api.routes.gallery` (the ranked gallery and thumbnails).
"""
