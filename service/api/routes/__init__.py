"""Routers, one module per resource: health (liveness, readiness, metrics), model (card and metadata), segment
(segment, analyze), slides, jobs. A route module imports no other route module: what two share lives below the
API (:mod:`service.field_result`, :mod:`service.slide_report`, :mod:`service.jobs`)."""
