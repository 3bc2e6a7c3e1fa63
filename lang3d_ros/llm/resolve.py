"""Resolving a Phrase on the map: label match -> colour/size -> relation to anchors -> superlative.

All geometry is computed here from the objects' boxes; the language model only ever supplies
the Phrase. A relation holds when it holds for any of the anchor phrase's matches (the best
ones when the anchor has its own superlative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lang3d_ros.grounding.objects import SceneObject
from lang3d_ros.llm.colors import ACHROMATIC, color_name, lightness, shading_invariant_distance
from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.llm.labels import LabelMatcher
from lang3d_ros.llm.relations import relation_cost, relation_holds, superlative_key
from lang3d_ros.llm.request import Phrase


@dataclass(frozen=True)
class Match:
    obj: SceneObject
    score: float  # label match in [0, 1]


def object_color(obj: SceneObject) -> str:
    return color_name(obj.color_rgb)


def label_candidates(label: str, objects: Sequence[SceneObject], matcher: LabelMatcher) -> list[Match]:
    """Objects whose label matches, keeping only the best tier (an exact 'table' hides 'coffee table')."""
    if not objects:
        return []
    s = matcher.score(label, [o.label for o in objects])
    for i, o in enumerate(objects):  # per-object open-vocabulary scores from the map, when it has them
        if label and label in o.label_scores:
            s[i] = max(s[i], float(o.label_scores[label]) if o.label_scores[label] >= matcher.threshold else 0.0)
    if s.max() <= 0:
        return []
    keep = s >= 0.99 * s.max()
    return [Match(o, float(v)) for o, v, k in zip(objects, s, keep) if k]


FLOOR_WORDS = ("floor", "ground")
"""Anchor labels that mean the floor ("the plant on the floor"): no object, the lowest bottom in the map."""
COLOR_MARGIN = 0.05  # chromaticity distance by which the closest candidate must beat the next one
LIGHTNESS_MARGIN = 15.0
"""CIE L* by which the lightest (darkest) grey-level candidate must beat the next for "white" ("black")."""
ACHROMATIC_MAX_SATURATION = 0.25
"""Saturation up to which an observed colour counts as a grey level (white, gray or black under some light)."""


def _achromatic_by_lightness(cands: list[Match], color: str) -> list[Match]:
    """ "white" / "black" among grey-level candidates none of which is named so: the clearly lightest (darkest)
    one, when it is named one step away (gray). A white monitor seen only on its shaded sides measures as a light
    gray beside a black one; people call the lighter of two grey objects the white one. "gray" stays unresolved
    (the middle is ambiguous), as does a candidate two steps away (a black one for "white")."""
    if color not in ("white", "black"):
        return []
    grey = [m for m in cands if shading_invariant_distance(m.obj.color_rgb, color) <= ACHROMATIC_MAX_SATURATION]
    if not grey:
        return []
    sign = 1.0 if color == "white" else -1.0
    light = np.array([sign * lightness(m.obj.color_rgb) for m in grey])
    order = np.argsort(-light)
    best = grey[int(order[0])]
    if object_color(best.obj) != "gray":
        return []
    if len(grey) > 1 and light[order[0]] - light[order[1]] < LIGHTNESS_MARGIN:
        return []
    return [best]


def filter_by_color(cands: list[Match], color: str) -> list[Match]:
    """Candidates whose mean colour is named ``color``; when none is (shading darkens colours: a lit orange chair
    averages to brown), the one candidate clearly closest to ``color`` in shading-invariant terms, if any; for
    white and black, the clearly lightest / darkest grey-level candidate (``_achromatic_by_lightness``)."""
    exact = [m for m in cands if object_color(m.obj) == color]
    if exact or not cands:  # several named alike: the truest colour first
        return sorted(exact, key=lambda m: shading_invariant_distance(m.obj.color_rgb, color))
    if color in ACHROMATIC:
        return _achromatic_by_lightness(cands, color)
    d = np.array([shading_invariant_distance(m.obj.color_rgb, color) for m in cands])
    order = np.argsort(d)
    if len(cands) == 1 or d[order[1]] - d[order[0]] >= COLOR_MARGIN:
        best = cands[int(order[0])]
        # still refuse a colour far from any plausible reading of the name
        if d[order[0]] <= 0.15:
            return [best]
    return []


def resolve(
    phrase: Phrase, objects: Sequence[SceneObject], robot_pose: np.ndarray, matcher: LabelMatcher, config: LLMConfig
) -> list[Match]:
    """Objects that fit ``phrase``, best first. Empty when nothing fits."""
    cands = label_candidates(phrase.label, objects, matcher)
    if phrase.color is not None:
        cands = filter_by_color(cands, phrase.color)
    superlative = phrase.superlative
    if phrase.size is not None and superlative is None and len(cands) > 1:
        superlative = "largest" if phrase.size == "large" else "smallest"
    if phrase.relation == "on" and len(phrase.anchors) == 1 and phrase.anchors[0].label in FLOOR_WORDS:
        floor_z = min(float(o.box.min_xyz[2]) for o in objects)  # the lowest object bottom stands for the floor
        cands = [m for m in cands if float(m.obj.box.min_xyz[2]) <= floor_z + config.on_tolerance_m]
    elif phrase.relation is not None:
        anchor_sets = [resolve(a, [o for o in objects], robot_pose, matcher, config) for a in phrase.anchors]
        # an anchor with a superlative or a size ("the big table") is its best match only
        anchor_sets = [s[:1] if a.superlative or a.size else s for a, s in zip(phrase.anchors, anchor_sets)]
        if any(len(s) == 0 for s in anchor_sets):
            return []
        kept = []
        known_ids = frozenset(o.instance_id for o in objects)
        for m in cands:
            best = None
            combos = (
                [(x,) for x in anchor_sets[0]]
                if len(anchor_sets) == 1
                else [(x, y) for x in anchor_sets[0] for y in anchor_sets[1] if x.obj is not y.obj]
            )
            for combo in combos:
                if any(c.obj is m.obj for c in combo):
                    continue
                anchors = [c.obj for c in combo]
                if relation_holds(
                    phrase.relation, m.obj, anchors, robot_pose, config.near_m, config.on_tolerance_m, known_ids
                ):
                    cost = relation_cost(phrase.relation, m.obj.box, [c.box for c in anchors])
                    best = cost if best is None else min(best, cost)
            if best is not None:
                kept.append((best, m))
        kept.sort(key=lambda t: (-t[1].score, t[0]))
        cands = [m for _, m in kept]
    if superlative is not None and cands:
        if superlative in ("closest", "farthest") and phrase.reference is not None:
            refs = resolve(phrase.reference, objects, robot_pose, matcher, config)
            refs = [r for r in refs if all(r.obj is not m.obj for m in cands)] or refs
            refs = refs[:1] if phrase.reference.superlative else refs
            if not refs:
                return []
            ref_boxes = [r.obj.box for r in refs if r.score >= refs[0].score]
        else:
            ref_boxes = [None]

        def key(m: Match) -> tuple[float, float]:  # closest/farthest: to the nearest of the references
            ks = [superlative_key(superlative, m.obj.box, robot_pose, rb) for rb in ref_boxes]
            return (-m.score, max(ks) if superlative == "farthest" else min(ks))

        cands = sorted(cands, key=key)
    elif phrase.relation is None:

        def plain_key(m: Match) -> tuple[float, float, float]:  # label score, truest colour, then nearest
            c = shading_invariant_distance(m.obj.color_rgb, phrase.color) if phrase.color is not None else 0.0
            return (-m.score, round(c, 3), float(np.linalg.norm(m.obj.center[:2] - robot_pose[:2])))

        cands = sorted(cands, key=plain_key)
    return cands
