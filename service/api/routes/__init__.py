"""Routers, one module per resource: health (liveness, readiness, metrics), models (cards and metadata), segment
(segment, analyze), slides (create, add fields, read, delete), review (a slide's objects, decisions, signatures),
slide_exports (counts, GeoJSON, annotations, report, field images), gallery (a slide's ranked candidates and their
thumbnails), identity (``/v1/me``), jobs, page (the web page). A route module imports no other route module: what
two share lives beside them in :mod:`service.api` (inference, lookups, field_images, params, schemas) or below the
API (:mod:`service.field_result`, :mod:`service.slides`, :mod:`service.jobs`)."""
