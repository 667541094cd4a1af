"""Bacilli as a GeoJSON FeatureCollection that QuPath imports (pixel coordinates, origin top-left)."""

from __future__ import annotations

from collections.abc import Iterable

from service.engine.postprocess import Bacillus

CLASS_NAME = "Bacillus"
CLASS_COLOUR = (220, 20, 60)


def measurements(b: Bacillus, microns_per_pixel: float | None) -> dict[str, float]:
    """Named measurements of one object, in pixels and, with a pixel size, in µm."""
    values = {
        "Area px": float(b.area_px),
        "Length px": b.length_px,
        "Width px": b.width_px,
        "Mean P(bacillus)": b.mean_probability,
        "Max P(bacillus)": b.max_probability,
    }
    if microns_per_pixel:
        values |= {
            "Area µm^2": round(b.area_px * microns_per_pixel**2, 4),
            "Length µm": round(b.length_px * microns_per_pixel, 4),
            "Width µm": round(b.width_px * microns_per_pixel, 4),
        }
    return values


def feature_collection(
    bacilli: Iterable[Bacillus], model_id: str, microns_per_pixel: float | None = None
) -> dict[str, object]:
    """One polygon feature per bacillus, as QuPath detections with a classification and measurements."""
    features = [
        {
            "type": "Feature",
            "id": f"bacillus-{b.id}",
            "geometry": {"type": "Polygon", "coordinates": [[list(point) for point in b.outline]]},
            "properties": {
                "objectType": "detection",
                "name": f"bacillus {b.id}",
                "classification": {"name": CLASS_NAME, "color": list(CLASS_COLOUR)},
                "measurements": measurements(b, microns_per_pixel),
            },
        }
        for b in bacilli
    ]
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {"model_id": model_id, "microns_per_pixel": microns_per_pixel},
    }
