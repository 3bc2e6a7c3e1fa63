"""Grounding parameters: relevancy threshold, DBSCAN clustering, robust boxes, whole-map extraction."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClusterConfig:
    """DBSCAN over 3D points (scikit-learn). Sets larger than ``max_points`` become count-weighted voxel
    centroids (voxel from ``voxel_size_m`` up to eps/2), then every point takes its nearest
    clustered centroid's label; ``min_samples`` always counts raw points."""

    eps_m: float = 0.08
    """DBSCAN neighbourhood radius (m)."""
    min_samples: int = 5
    """DBSCAN core-point count (raw points within eps_m)."""
    voxel_size_m: float = 0.02
    """First subsampling grid when there are more than max_points points."""
    max_points: int = 20_000
    """Above this many points, cluster voxel centroids instead of raw points."""

    def validate(self) -> None:
        if self.eps_m <= 0 or self.voxel_size_m <= 0:
            raise ValueError("eps_m and voxel_size_m must be positive")
        if self.min_samples < 1 or self.max_points < 1:
            raise ValueError("min_samples and max_points must be >= 1")


@dataclass
class GroundingConfig:
    """Query grounding: a point is relevant when relevancy >= max(absolute_threshold,
    relative_threshold * max relevancy)."""

    absolute_threshold: float = 0.5
    """LERF relevancy: 0.5 is "as close to the query as to a canonical phrase"."""
    relative_threshold: float = 0.8
    """Fraction of the best point's relevancy."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Clustering of the relevant points into instances."""
    min_points: int = 20
    """Instances with fewer raw points are dropped."""
    box_percentile: float = 1.0
    """Clip this percentile off both ends of each box axis (outliers)."""
    score_top_fraction: float = 0.1
    """Score = mean relevancy of the instance's top 10 % points."""
    min_score: float = 0.5
    """Instances scoring below this are not returned."""
    top_k: int = 5
    """At most this many instances per query (a request's max_results overrides it)."""

    def validate(self) -> None:
        if not 0.0 <= self.absolute_threshold < 1.0:
            raise ValueError("absolute_threshold must be in [0, 1)")
        if not 0.0 <= self.relative_threshold <= 1.0:
            raise ValueError("relative_threshold must be in [0, 1]")
        if not 0.0 <= self.box_percentile < 25.0:
            raise ValueError("box_percentile must be in [0, 25)")
        if not 0.0 < self.score_top_fraction <= 1.0:
            raise ValueError("score_top_fraction must be in (0, 1]")
        if self.min_points < 1 or self.top_k < 1:
            raise ValueError("min_points and top_k must be >= 1")
        self.cluster.validate()


# Common indoor object classes (ScanNet-like, no near-synonym pairs that would split an object between labels).
DEFAULT_VOCABULARY = (
    "chair", "table", "desk", "sofa", "bed", "cabinet", "shelf", "bookshelf", "stool", "lamp", "plant", "monitor",
    "television", "box", "door", "window", "sink", "toilet", "refrigerator", "microwave", "oven", "counter",
    "trash can", "pillow", "backpack", "bag", "mug", "bottle", "laptop", "keyboard", "computer mouse", "book",
    "bowl", "vase", "ball", "toy car", "picture", "curtain", "clock", "towel", "shoe", "person",
)


@dataclass
class ExtractionConfig:
    """Whole-map object extraction: argmax label per point over vocabulary + structure phrases, DBSCAN
    per label, instances labelled by their mean feature."""

    vocabulary: list[str] = field(default_factory=lambda: list(DEFAULT_VOCABULARY))
    """Object labels the map's instances are classified into (open vocabulary: any phrases)."""
    structure_labels: list[str] = field(default_factory=lambda: ["floor", "wall", "ceiling"])
    """Phrases for room structure; points closest to these are not objects."""
    keep_structure: bool = False
    """True: keep structure instances (label "structure:<phrase>")."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Clustering of each label's points into instances."""
    min_points: int = 30
    """Instances with fewer raw points are dropped."""
    box_percentile: float = 1.0
    """Clip this percentile off both ends of each box axis (outliers)."""
    label_temperature: float = 100.0
    """CLIP logit scale for label_scores = softmax(T * cos)."""
    min_similarity: float = 0.0
    """Points whose best cosine is lower stay unlabelled."""
    planar_min_extent_m: float = 2.5
    """A cluster at least this wide (xy) ..."""
    planar_max_thickness_m: float = 0.08
    """... made of up to planar_max_planes slabs this thick ..."""
    planar_min_fraction: float = 0.85
    """... that hold this fraction of its points is structure."""
    planar_max_planes: int = 4
    """... at most this many slabs (a wall, a floor, a corner)."""

    def validate(self) -> None:
        if not self.vocabulary:
            raise ValueError("vocabulary must not be empty")
        overlap = set(self.vocabulary) & set(self.structure_labels)
        if overlap:
            raise ValueError(f"labels {sorted(overlap)} are in both vocabulary and structure_labels")
        if self.min_points < 1:
            raise ValueError("min_points must be >= 1")
        if not 0.0 <= self.box_percentile < 25.0:
            raise ValueError("box_percentile must be in [0, 25)")
        if self.label_temperature <= 0:
            raise ValueError("label_temperature must be positive")
        if self.planar_max_thickness_m <= 0 or self.planar_min_extent_m <= 0:
            raise ValueError("planar_max_thickness_m and planar_min_extent_m must be positive")
        if not 0.0 < self.planar_min_fraction <= 1.0 or self.planar_max_planes < 1:
            raise ValueError("planar_min_fraction must be in (0, 1] and planar_max_planes >= 1")
        self.cluster.validate()
