"""Online 3D instances (segments): association of keyframe masks, the periodic maintenance pass, statistics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InstanceConfig:
    """How keyframe masks become 3D segments (one table for the three semantic levels).

    A mask joins the segment that most of its already-labelled pixels' points belong to (3D overlap through
    fusion's projective association) when their features agree; otherwise a segment whose box holds the mask's
    points and whose feature agrees; otherwise it starts a segment. Every ``maintain_every_keyframes`` keyframes
    segments are merged (seen together in one mask more often than apart, or boxes that overlap and were never
    seen apart) and rarely seen ones dropped."""

    min_overlap_fraction: float = 0.2
    """A mask matches a segment when at least this fraction of its fused pixels landed on the segment's points."""
    min_overlap_px: int = 4
    """... and at least this many pixels; masks with fewer fused pixels neither associate nor vote."""
    match_min_cosine: float = 0.75
    """Feature agreement needed to match a mask to a segment (cosine of unit features)."""
    confused_min_iou: float = 0.6
    """A mask that matches no segment but whose fused pixels overlap the pixels in view of one established segment
    by this IoU names that object with a confused label: it neither starts a segment nor votes (1: off) ..."""
    confused_min_observations: int = 3
    """... established: matched in at least this many keyframes."""
    split_min_share: float = 0.15
    """A segment holding at least this share of a mask's labelled pixels counts as covered by it (co-observation
    counts for the merge pass)."""
    containment_min_fraction: float = 0.5
    """Geometric fallback: intersection of the mask points' box and a segment's (margin-grown) box, as a fraction
    of the smaller of the two, needed to match it."""
    box_margin_m: float = 0.05
    """Margin added to segment boxes by the geometric fallback and the overlap merge."""
    vote_erode_px: int = 2
    """Only pixels at least this far inside their mask (4-neighbourhood erosion) vote and count for association:
    a mask's boundary, where it spills onto the background behind the object, moves no labels. A mask that this
    would take more than half of is eroded as deep as keeps half (one step, or none for a thin object), and so is
    a thin part of a mask (a laptop's base seen as a strip beside its screen)."""
    depth_edge_radius_px: int = 4
    """Depth consistency of mask pixels: a pixel deeper than the nearest pixel of its own mask within this many
    steps through the mask by more than the tolerance below lies behind the object (a mask spilling over the
    silhouette onto the wall or floor) and neither votes nor associates. 0: off."""
    depth_edge_tol_m: float = 0.06
    """Depth step (metres) that counts as "behind" ..."""
    depth_edge_tol_per_m2: float = 0.01
    """... plus this times depth squared (structured-light noise grows with z^2)."""
    mask_part_link_m: float = 0.15
    """Each mask keeps only its largest 3D part (its pixels' points joined through neighbouring voxels of this size)
    for association and votes, as ConceptGraphs keeps a detection's largest DBSCAN cluster: a mask merged over
    two objects far apart in depth (adjacent in the image) labels one of them. 0: off."""
    maintain_every_keyframes: int = 2
    """Run the merge / drop pass every this many keyframes."""
    merge_min_cosine: float = 0.85
    """Feature agreement needed to merge two segments."""
    merge_min_together: int = 2
    """Times two segments were covered by one mask before co-observation can merge them."""
    merge_together_ratio: float = 0.5
    """Merge co-observed segments when together / (together + apart) exceeds this."""
    merge_min_box_overlap: float = 0.6
    """Merge never-apart segments whose AABB intersection holds this fraction of the smaller box."""
    drop_min_observations: int = 2
    """Segments matched in fewer keyframes than this while two more keyframes had their points in view ..."""
    drop_min_detection_ratio: float = 0.25
    """... or matched in fewer than this fraction of the keyframes that had them in view (a segment of a confused
    or split mask) ..."""
    drop_after_keyframes: int = 6
    """... once this many keyframes have passed since they were first seen, are dropped."""
    min_points: int = 10
    """Segments with fewer points are dropped at maintenance and never returned by queries."""
    min_observations: int = 2
    """Segments matched in fewer keyframes are not answerable yet (queries, objects, the Gaussians' relevancy):
    one confused or merged mask makes a segment that no later keyframe confirms ..."""
    answer_unrevisited: bool = True
    """Also answer with segments that every keyframe having them in view matched, however few (a small object
    seen only in the last keyframe, or from one place: nothing contradicts it yet), when the mask that started
    them lay on new points (``unrevisited_min_new_fraction``) and no confirmed segment of their level with an
    agreeing feature (``match_min_cosine``) touches their box (a new side of a known object waits for the merge
    pass). False: only ``min_observations``."""
    unrevisited_min_new_fraction: float = 0.8
    """... at least this share of its fused pixels on points that had no segment of its level yet. A mask split
    off or confused over a known object lies on that object's points; an object first seen in this keyframe
    brings its own. 0: any unrevisited segment (net-negative with the mask-noise model: segments of masks
    confused or split in the last keyframes answered; 14 dev seeds: 2 counts more wrong, 0.8 none)."""
    cluster_voxel_m: float = 0.1
    """Boxes and colours come from a segment's main 3D clusters: its points joined through neighbouring voxels of
    this size; 0: all points ..."""
    cluster_keep_ratio: float = 0.3
    """... clusters holding at least this fraction of the largest one's points are kept (stray points a confused
    or spilled mask labelled elsewhere are not) ..."""
    cluster_near_m: float = 0.15
    """... and smaller ones within this distance of a kept one horizontally, twice that vertically (a lamp's base
    under its shade, its pole too thin to be seen)."""
    box_percentile: float = 0.5
    """Robust boxes: clip this percentile off both ends of each box axis (of the main clusters' points, strays are
    gone by then). A share of points is not a length: at 2 % a shelf whose top board is seen edge-on (1 % of its
    points) lost 8 cm of height, and objects resting on it were lowered onto that false top."""
    support_max_gap_m: float = 0.06
    """Support: the bottom of an object within this distance of the height of ..."""
    support_search_margin_m: float = 0.1
    """... on points of the other's horizontal surfaces within this distance of its footprint ..."""
    support_min_points: int = 5
    """... at least this many of them."""
    support_min_drop_m: float = 0.02
    """A support's box bottom lies more than this below the object's: a neighbour resting on the same surface has
    the same bottom (within depth noise and ``box_percentile``) and is no support; a book or a tray under a mug
    is only 2-5 cm thick and is one."""
    support_nearer_m: float = 0.02
    """Among the supports whose box holds an object's centre, one whose surface lies nearer the object's bottom by
    more than this wins over one with more points (a book under a mug, the box under the book); within it, the
    most points (two surfaces at one height: depth noise orders them) ..."""
    support_nearer_share: float = 0.33
    """... when it shows at least this share of the points the best-seen of them shows (a few stray points of a
    neighbour at the object's own height are no surface)."""
    support_box_max_gap_m: float = 0.25
    """Fallback when no such surface is seen: an object whose box bottom is at most this far above the top of a
    box under its centre rests on it (parts lost at its foot: a monitor's neck, a lamp's pole). Also the reach of
    the surface seen under a box (stats.seen_surface_below: the highest one at most this far under its bottom,
    points of any segment or none): a box without a support goes down onto it (the floor is no segment), one the
    rules above lowered goes no lower than it (a support's box top is too low when its top board is unlabelled)."""
    support_surface_band_m: float = 0.03
    """... that surface: at least ``support_min_points`` column tops (columns this wide) within this height under
    the highest of them (a fused surface is about one voxel thick)."""

    def validate(self) -> None:
        for name in (
            "min_overlap_fraction",
            "split_min_share",
            "containment_min_fraction",
            "merge_together_ratio",
            "merge_min_box_overlap",
            "drop_min_detection_ratio",
            "cluster_keep_ratio",
            "confused_min_iou",
            "unrevisited_min_new_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"instances.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("match_min_cosine", "merge_min_cosine"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"instances.{name} must be in [-1, 1], got {getattr(self, name)}")
        for name in (
            "min_overlap_px",
            "maintain_every_keyframes",
            "merge_min_together",
            "drop_min_observations",
            "drop_after_keyframes",
            "min_points",
            "min_observations",
            "confused_min_observations",
            "support_min_points",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"instances.{name} must be >= 1, got {getattr(self, name)}")
        if self.mask_part_link_m < 0:
            raise ValueError(f"instances.mask_part_link_m must be >= 0, got {self.mask_part_link_m}")
        if self.vote_erode_px < 0 or self.depth_edge_radius_px < 0:
            raise ValueError("instances.vote_erode_px and depth_edge_radius_px must be >= 0")
        if self.depth_edge_tol_m <= 0 or self.depth_edge_tol_per_m2 < 0:
            raise ValueError("instances.depth_edge_tol_m must be > 0 and depth_edge_tol_per_m2 >= 0")
        if self.cluster_voxel_m < 0 or self.cluster_near_m < 0:
            raise ValueError("instances.cluster_voxel_m and cluster_near_m must be >= 0")
        if (
            min(
                self.box_margin_m,
                self.support_max_gap_m,
                self.support_search_margin_m,
                self.support_box_max_gap_m,
                self.support_min_drop_m,
                self.support_nearer_m,
            )
            < 0
            or self.support_surface_band_m <= 0
        ):
            raise ValueError("instances.box_margin_m and the support gaps / margins must be >= 0 (the band > 0)")
        if not 0.0 <= self.support_nearer_share <= 1.0:
            raise ValueError("instances.support_nearer_share must be in [0, 1]")
        if not 0.0 <= self.box_percentile < 25.0:
            raise ValueError("instances.box_percentile must be in [0, 25)")
