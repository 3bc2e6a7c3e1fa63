"""Answering grounding queries, questions and instructions on a list of SceneObject.

``Reasoner(config, backend, encoder)`` holds the (optional) model; ``understand`` turns the text into one
Request once (``lang3d_ros.llm.understand``: parser + label matcher, the model ranking and filling), and
``ground`` / ``ask`` compute every geometric fact in code on the map from that Request (pass the
Understanding back in to avoid a second parse). Answers are templates over map facts; they cannot describe
anything the map has no object for.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.grounding.objects import SceneObject
from lang3d_ros.llm.backends import LLMBackend
from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.llm.frontend import check_query
from lang3d_ros.llm.labels import LabelMatcher, TextEncoder, plural
from lang3d_ros.llm.relations import rests_on, validate_robot_pose
from lang3d_ros.llm.request import Action, Attribute, Intent, Phrase, Request
from lang3d_ros.llm.resolve import object_color, resolve
from lang3d_ros.llm.understand import AnsweredBy, Understanding, understand

log = logging.getLogger(__name__)


@dataclass
class GroundingAnswer:
    objects: list[SceneObject]
    """Best first."""
    path: AnsweredBy
    request: Request
    message: str


@dataclass
class TaskStep:
    action: Action
    label: str
    object: SceneObject | None  # None for the robot's own start pose ("me")
    goal_pose: tuple[float, float, float]  # (x_m, y_m, yaw_rad) in the map frame, facing the object


@dataclass
class Answer:
    text: str
    objects: list[SceneObject]
    path: AnsweredBy
    request: Request
    steps: list[TaskStep] = field(default_factory=list)


def clean_query(query, max_chars: int) -> str:
    """The one query validator (``frontend.check_query``), kept under its old name."""
    return check_query(query, max_chars)


def _a(label: str) -> str:
    return f"the {label or 'object'}"


def _where(o: SceneObject) -> str:
    c = o.center
    return f"at x={c[0]:.2f} m, y={c[1]:.2f} m, z={c[2]:.2f} m"


def _plural(label: str, n: int) -> str:
    return label if n == 1 else plural(label)


def approach_pose(obj_center_xy, robot_xy, standoff_m: float, half_extent_m: float) -> tuple[float, float, float]:
    """A pose ``standoff_m`` outside the object's footprint on the robot's side, facing the object.
    It does not check the occupancy map: the navigation area replans it."""
    c, r = np.asarray(obj_center_xy, float), np.asarray(robot_xy, float)
    d = r - c
    n = float(np.linalg.norm(d))
    u = d / n if n > 1e-6 else np.array([1.0, 0.0])
    p = c + u * (half_extent_m + standoff_m)
    return (float(p[0]), float(p[1]), float(math.atan2(-u[1], -u[0])))


class Reasoner:
    """Holds the backend (None = parser only) and the label matcher."""

    def __init__(
        self, config: LLMConfig | None = None, backend: LLMBackend | None = None, encoder: TextEncoder | None = None
    ) -> None:
        self.config = config or LLMConfig()
        self.config.validate()
        self.backend = backend
        self.matcher = LabelMatcher(encoder, self.config.text_match_threshold)

    # text -> request ------------------------------------------------------------------------
    def understand(self, query: str, objects: Sequence[SceneObject]) -> Understanding:
        """The query as one Request (see ``lang3d_ros.llm.understand``). ValueError when nothing understands
        it, Lang3DError(NOT_FOUND) when it names nothing in the map."""
        return understand(
            check_query(query, self.config.max_query_chars), list(objects), self.matcher, self.config, self.backend
        )

    def _resolve(self, phrase: Phrase, objects, pose):
        return [m.obj for m in resolve(phrase, objects, pose, self.matcher, self.config)]

    # public API -----------------------------------------------------------------------------
    def ground(
        self, query: str, objects: Sequence[SceneObject], robot_pose, understood: Understanding | None = None
    ) -> GroundingAnswer:
        """Objects matching a (relational) referring expression, best first. ``understood``: this query's
        Understanding when the caller has it already (the query is then not parsed again)."""
        q = check_query(query, self.config.max_query_chars)
        pose = validate_robot_pose(robot_pose)
        objects = list(objects)
        u = understood if understood is not None else self.understand(q, objects)
        phrase = u.target()
        if phrase is None:
            raise Lang3DError(ErrorCode.BAD_REQUEST, f"{q!r} names no object to ground")
        found = self._resolve(phrase, objects, pose)
        if found:
            msg = f"{u.note}found {len(found)} match(es) for {phrase.describe()}"
        else:
            msg = f"{u.note}no {phrase.describe()[4:]} in the map"
        return GroundingAnswer(found, u.answered_by, u.request, msg)

    def ask(
        self, question: str, objects: Sequence[SceneObject], robot_pose, understood: Understanding | None = None
    ) -> Answer:
        """Counts, attributes, relations, where-is, captions and task steps, from map facts."""
        q = check_query(question, self.config.max_query_chars)
        pose = validate_robot_pose(robot_pose)
        objects = list(objects)
        u = understood if understood is not None else self.understand(q, objects)
        text, refs, steps = self._answer(u.request, objects, pose)
        return Answer(text, refs, u.answered_by, u.request, steps)

    def _answer(self, req: Request, objects: list[SceneObject], pose: np.ndarray):
        t = req.target
        if req.intent == Intent.COUNT:
            found = self._resolve(t, objects, pose)
            where = ""
            if t.relation:  # "the mug on the table" -> " on the table"
                full, head = t.describe(), Phrase(t.label, t.color, t.size).describe()
                where = full[len(head) :] if full.startswith(head) else ""
            noun = " ".join(w for w in (t.color, _plural(t.label or "object", len(found))) if w)
            return f"There {'is' if len(found) == 1 else 'are'} {len(found)} {noun}{where}.", found, []
        if req.intent == Intent.ATTRIBUTE:
            found = self._resolve(t, objects, pose)
            if not found:
                return f"I see no {t.describe()[4:]} in the map.", [], []
            o = found[0]
            if req.attribute == Attribute.COLOR:
                return f"The {o.label} is {object_color(o)}.", [o], []
            s = o.box.size
            return f"The {o.label} is {s[0]:.2f} m x {s[1]:.2f} m x {s[2]:.2f} m (w x d x h).", [o], []
        if req.intent == Intent.RELATIONS:
            found = self._resolve(t, objects, pose)
            anchor = t.anchors[0].label if t.anchors else "it"
            rel = (t.relation or "near").replace("_", " ")
            if not found:
                return f"Nothing is {rel} the {anchor}.", [], []
            names = ", ".join(f"a {object_color(o)} {o.label}" for o in found[:8])
            return f"{rel.capitalize()} the {anchor}: {names}.", found, []
        if req.intent == Intent.WHERE:
            found = self._resolve(t, objects, pose)
            if not found:
                return f"I see no {t.describe()[4:]} in the map.", [], []
            return " ".join(self._where_sentence(o, objects) for o in found[:3]), found[:3], []
        if req.intent == Intent.CAPTION:
            return self._caption(t, objects, pose)
        if req.intent == Intent.TASK:
            return self._task(req, objects, pose)
        found = self._resolve(t, objects, pose)
        if not found:
            return f"I see no {t.describe()[4:]} in the map.", [], []
        o = found[0]
        return f"{t.describe().capitalize()} is the {object_color(o)} {o.label} {_where(o)}.", found, []

    def _where_sentence(self, o: SceneObject, objects: list[SceneObject]) -> str:
        ids = frozenset(x.instance_id for x in objects)
        support = [s for s in objects if s is not o and rests_on(o, s, ids, self.config.on_tolerance_m)]
        on = f" on the {support[0].label}" if support else " on the floor" if o.box.min_xyz[2] < 0.05 else ""
        return f"The {object_color(o)} {o.label} is{on} {_where(o)}."

    def _caption(self, t: Phrase | None, objects: list[SceneObject], pose: np.ndarray):
        if t is not None:
            found = self._resolve(t, objects, pose)
            if not found:
                return f"I see no {t.describe()[4:]} in the map.", [], []
            o = found[0]
            s = o.box.size
            ids = frozenset(x.instance_id for x in objects)
            held = [x.label for x in objects if x is not o and rests_on(x, o, ids, self.config.on_tolerance_m)]
            extra = f" On it: {', '.join(held)}." if held else ""
            return (
                (
                    f"A {object_color(o)} {o.label}, {s[0]:.2f} x {s[1]:.2f} x {s[2]:.2f} m. "
                    f"{self._where_sentence(o, objects)}{extra}"
                ),
                [o],
                [],
            )
        if not objects:
            return "The map has no objects yet.", [], []
        counts: dict[str, int] = {}
        for o in objects:
            counts[o.label] = counts.get(o.label, 0) + 1
        parts = [f"{n} {_plural(l, n)}" for l, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        lo = np.min([o.box.min_xyz for o in objects], 0)
        hi = np.max([o.box.max_xyz for o in objects], 0)
        ids = frozenset(x.instance_id for x in objects)
        on_pairs = [
            f"the {a.label} on the {b.label}"
            for a in objects
            for b in objects
            if a is not b and rests_on(a, b, ids, self.config.on_tolerance_m)
        ][:4]
        text = (
            f"The map holds {len(objects)} objects over {hi[0] - lo[0]:.1f} m x {hi[1] - lo[1]:.1f} m: "
            f"{', '.join(parts)}." + (f" Among them {', '.join(on_pairs)}." if on_pairs else "")
        )
        return text, list(objects), []

    def _task(self, req: Request, objects: list[SceneObject], pose: np.ndarray):
        steps: list[TaskStep] = []
        refs: list[SceneObject] = []
        for s in req.steps:
            if s.target.label in ("me", "user", "here"):
                steps.append(TaskStep(s.action, "me", None, (float(pose[0]), float(pose[1]), float(pose[2]))))
                continue
            found = self._resolve(s.target, objects, pose)
            if not found:
                raise Lang3DError(
                    ErrorCode.NOT_FOUND, f"cannot plan '{s.action} {s.target.describe()}': no such object in the map"
                )
            o = found[0]
            half = 0.5 * float(np.max(o.box.max_xyz[:2] - o.box.min_xyz[:2]))
            goal = approach_pose(o.center[:2], pose[:2], self.config.standoff_m, half)
            steps.append(TaskStep(s.action, o.label, o, goal))
            refs.append(o)
        text = "; ".join(
            f"{i + 1}. {st.action} {st.label}" + (f" (id {st.object.instance_id})" if st.object else "")
            for i, st in enumerate(steps)
        )
        return text, refs, steps
