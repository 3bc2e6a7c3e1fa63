"""Scene objects for the 3D-LLM: from synthetic ground truth, and serialised with location tokens."""

from __future__ import annotations

from typing import Sequence

from lang3d_ros.grounding.objects import SceneObject
from lang3d_ros.llm.colors import color_name
from lang3d_ros.llm.location import LocationGrid


def objects_from_ground_truth(scene) -> list[SceneObject]:
    """SceneObject list (oriented GT boxes, GT colours) from a synthetic scene or its GroundTruth.
    Needs objects with instance_id, label, obb, color_rgb; n_points is left 0."""
    objs = getattr(scene, "objects", None)
    if objs is None:
        raise ValueError("scene has no objects attribute")
    return [SceneObject(int(o.instance_id), str(o.label), o.obb, color_rgb=o.color_rgb) for o in objs]


def scene_text(objects: Sequence[SceneObject], grid: LocationGrid) -> str:
    """One line per object: 'id label colour <loc..>x6' (3D-LLM boxes-demonstration input)."""
    return "\n".join(
        f"{o.instance_id} {o.label} {color_name(o.color_rgb)} {grid.box_to_tokens(o.box)}" for o in objects
    )
