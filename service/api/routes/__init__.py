"""Routers: health (liveness, readiness, metrics), model (card and metadata), segment (segment, analyze)."""
