"""Grounding parameters: which segments a query keeps, and how the map's instances are labelled."""

from __future__ import annotations

from dataclasses import dataclass, field

from lang3d_ros.gaussians.config import FieldChoice


@dataclass
class GroundingConfig:
    """Query grounding on the segment table: a segment is kept when its relevancy >= max(absolute_threshold,
    relative_threshold * best segment's relevancy, min_score)."""

    absolute_threshold: float = 0.5
    """LERF relevancy: 0.5 is "as close to the query as to a canonical phrase"."""
    relative_threshold: float = 0.8
    """Fraction of the best segment's relevancy."""
    min_score: float = 0.5
    """Instances scoring below this are not returned."""
    top_k: int = 5
    """At most this many instances per query (a request's max_results overrides it)."""
    field: FieldChoice = "auto"
    """What answers Ground and renders relevancy: points (the fused map's segments, always available) | gaussians
    (the trained language Gaussians: their instance codes gather the segments' relevancy, so instance ids and boxes
    are the points'; a relevancy image can be rendered for any camera pose; an error until training is done) | auto
    (gaussians once training is done and the Gaussians carry codes, points before)."""

    def validate(self) -> None:
        if not 0.0 <= self.absolute_threshold < 1.0:
            raise ValueError("absolute_threshold must be in [0, 1)")
        if not 0.0 <= self.relative_threshold <= 1.0:
            raise ValueError("relative_threshold must be in [0, 1]")
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")


# Common indoor object classes (ScanNet-like, no near-synonym pairs that would split an object between labels).
DEFAULT_VOCABULARY = (
    "chair",
    "table",
    "desk",
    "sofa",
    "bed",
    "cabinet",
    "shelf",
    "bookshelf",
    "stool",
    "lamp",
    "plant",
    "monitor",
    "television",
    "box",
    "door",
    "window",
    "sink",
    "toilet",
    "refrigerator",
    "microwave",
    "oven",
    "counter",
    "trash can",
    "pillow",
    "backpack",
    "bag",
    "mug",
    "bottle",
    "laptop",
    "keyboard",
    "computer mouse",
    "book",
    "bowl",
    "vase",
    "ball",
    "toy car",
    "picture",
    "curtain",
    "clock",
    "towel",
    "shoe",
    "person",
)


@dataclass
class ExtractionConfig:
    """Labels of the map's instances: each "whole"-level segment's feature classified against the vocabulary
    and the structure phrases (grounding/extract.py)."""

    vocabulary: list[str] = field(default_factory=lambda: list(DEFAULT_VOCABULARY))
    """Object labels the map's instances are classified into (open vocabulary: any phrases)."""
    structure_labels: list[str] = field(default_factory=lambda: ["floor", "wall", "ceiling"])
    """Phrases for room structure; segments closest to these are not objects."""
    keep_structure: bool = False
    """True: keep structure instances (label "structure:<phrase>")."""
    label_temperature: float = 100.0
    """CLIP logit scale for label_scores = softmax(T * cos)."""
    planar_min_extent_m: float = 2.5
    """A segment whose box is at least this wide (xy) ..."""
    planar_max_thickness_m: float = 0.08
    """... and at most this thick is structure (a floor or wall slab)."""

    def validate(self) -> None:
        if not self.vocabulary:
            raise ValueError("vocabulary must not be empty")
        overlap = set(self.vocabulary) & set(self.structure_labels)
        if overlap:
            raise ValueError(f"labels {sorted(overlap)} are in both vocabulary and structure_labels")
        if self.label_temperature <= 0:
            raise ValueError("label_temperature must be positive")
        if self.planar_max_thickness_m <= 0 or self.planar_min_extent_m <= 0:
            raise ValueError("planar_max_thickness_m and planar_min_extent_m must be positive")
