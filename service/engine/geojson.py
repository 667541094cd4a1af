"""Bacilli as a GeoJSON FeatureCollection that QuPath imports (pixel coordinates, origin top-left)."""

from __future__ import annotations

from collections.abc import Iterable

from service.engine.postprocess import DetectedObject

CLASS_NAME = "Bacillus"
CLASS_COLOUR = (220, 20, 60)
REJECTED_NAME = "Rejected candidate"
REJECTED_COLOUR = (160, 160, 160)


def measurements(b: DetectedObject, microns_per_pixel: float | None) -> dict[str, float]:
    """Named measurements of one object, in pixels and, with a pixel size, in µm."""
    values = {
        "Area px": float(b.area_px),
        "Length px": b.length_px,
        "Width px": b.width_px,
        "Mean P(bacillus)": b.mean_probability,
        "Max P(bacillus)": b.max_probability,
        "Estimated bacilli": float(b.estimated_count),
    }
    if b.score is not None:
        values["Object score"] = b.score
    if microns_per_pixel:
        microns = b.in_microns(microns_per_pixel)
        values |= {"Area µm^2": microns.area_um2, "Length µm": microns.length_um, "Width µm": microns.width_um}
    return values


def _feature(
    b: DetectedObject, kind: str, name: str, colour: tuple[int, int, int], mpp: float | None
) -> dict[str, object]:
    return {
        "type": "Feature",
        "id": f"{kind}-{b.id}",
        "geometry": {"type": "Polygon", "coordinates": [[list(point) for point in b.outline]]},
        "properties": {
            "objectType": "detection",
            "name": f"{kind} {b.id}",
            "classification": {"name": name, "color": list(colour)},
            "measurements": measurements(b, mpp),
        },
    }


def feature_collection(
    bacilli: Iterable[DetectedObject],
    model_id: str,
    microns_per_pixel: float | None = None,
    rejected: Iterable[DetectedObject] = (),
    filter_id: str | None = None,
) -> dict[str, object]:
    """One polygon feature per bacillus, as QuPath detections with a classification and measurements; rejected
    candidates, when given, in their own class."""
    features = [_feature(b, "bacillus", CLASS_NAME, CLASS_COLOUR, microns_per_pixel) for b in bacilli]
    features += [_feature(b, "rejected", REJECTED_NAME, REJECTED_COLOUR, microns_per_pixel) for b in rejected]
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {"model_id": model_id, "filter_id": filter_id, "microns_per_pixel": microns_per_pixel},
    }
