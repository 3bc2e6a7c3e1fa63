"""Answering grounding queries, questions and instructions on a list of SceneObject.

``Reasoner(config, backend, encoder)`` holds the (optional) model; ``ground`` and ``ask`` turn the
text into a Request (model first, the deterministic parser when the model's output is invalid or
the model is unavailable), then compute every geometric fact in code on the map. Answers are
templates over map facts; they cannot describe anything the map has no object for.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lang3d_ros.grounding.objects import SceneObject
from lang3d_ros.llm.backends import LLMBackend, LLMUnavailable
from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.llm.labels import LabelMatcher, TextEncoder
from lang3d_ros.llm.parser import parse
from lang3d_ros.llm.prompting import llm_request
from lang3d_ros.llm.relations import is_on, validate_robot_pose
from lang3d_ros.llm.request import Phrase, Request, request_from_dict
from lang3d_ros.llm.resolve import object_color, resolve

log = logging.getLogger(__name__)


@dataclass
class GroundingAnswer:
    objects: list[SceneObject]  # best first
    path: str  # "llm" | "parser"
    request: Request
    message: str


@dataclass
class TaskStep:
    action: str  # goto | pick | place
    label: str
    object: SceneObject | None  # None for the robot's own start pose ("me")
    goal_pose: tuple[float, float, float]  # (x_m, y_m, yaw_rad) in the map frame, facing the object


@dataclass
class Answer:
    text: str
    objects: list[SceneObject]
    path: str
    request: Request
    steps: list[TaskStep] = field(default_factory=list)


def clean_query(query, max_chars: int) -> str:
    """Strip, collapse whitespace, drop control characters; ValueError when empty or too long."""
    if not isinstance(query, str):
        raise ValueError(f"query must be a string, got {type(query).__name__}")
    if len(query) > max_chars:
        raise ValueError(f"query is {len(query)} characters; at most {max_chars} are accepted")
    q = " ".join("".join(ch if ch.isprintable() else " " for ch in query).split())
    if not q:
        raise ValueError("query is empty")
    return q


def _a(label: str) -> str:
    return f"the {label or 'object'}"


def _where(o: SceneObject) -> str:
    c = o.center
    return f"at x={c[0]:.2f} m, y={c[1]:.2f} m, z={c[2]:.2f} m"


def _plural(label: str, n: int) -> str:
    if n == 1:
        return label
    if label.endswith(("s", "x", "ch", "sh")):
        return label + "es"
    if label.endswith("y") and label[-2:-1] not in "aeiou":
        return label[:-1] + "ies"
    return label + "s"


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

    def __init__(self, config: LLMConfig | None = None, backend: LLMBackend | None = None,
                 encoder: TextEncoder | None = None) -> None:
        self.config = config or LLMConfig()
        self.config.validate()
        self.backend = backend
        self.matcher = LabelMatcher(encoder, self.config.text_match_threshold)

    # text -> request ------------------------------------------------------------------------
    def understand(self, query: str, objects: Sequence[SceneObject]) -> tuple[Request, str, str]:
        """(request, path, note). ValueError when neither the model nor the parser understands."""
        note = ""
        if self.backend is not None and self.config.mode == "llm_first":
            try:
                req = llm_request(self.backend, query, [o.label for o in objects], self.config.max_new_tokens,
                                  self.config.timeout_s)
                return req, "llm", ""
            except ValueError as exc:
                note = f"model output rejected ({exc}); "
                log.debug("LLM request rejected for %r: %s", query, exc)
            except LLMUnavailable as exc:
                note = f"model unavailable ({exc}); "
                log.warning("LLM unavailable: %s", exc)
        req = parse(query)
        if req is not None:
            req = request_from_dict(req.to_dict())  # the parser's output meets the same schema and limits
        if req is None:
            raise ValueError(f"{note}could not understand {query!r}: name an object, e.g. 'the mug on the table'")
        return req, "parser", note

    def _resolve(self, phrase: Phrase, objects, pose):
        return [m.obj for m in resolve(phrase, objects, pose, self.matcher, self.config)]

    # public API -----------------------------------------------------------------------------
    def ground(self, query: str, objects: Sequence[SceneObject], robot_pose) -> GroundingAnswer:
        """Objects matching a (relational) referring expression, best first."""
        q = clean_query(query, self.config.max_query_chars)
        pose = validate_robot_pose(robot_pose)
        objects = list(objects)
        req, path, note = self.understand(q, objects)
        phrase = req.target if req.target is not None else (req.steps[0].target if req.steps else None)
        if phrase is None:
            raise ValueError(f"{q!r} names no object to ground")
        found = self._resolve(phrase, objects, pose)
        if found:
            msg = f"{note}found {len(found)} match(es) for {phrase.describe()}"
        else:
            msg = f"{note}no {phrase.describe()[4:]} in the map"
        return GroundingAnswer(found, path, req, msg)

    def ask(self, question: str, objects: Sequence[SceneObject], robot_pose) -> Answer:
        """Counts, attributes, relations, where-is, captions and task steps, from map facts."""
        q = clean_query(question, self.config.max_query_chars)
        pose = validate_robot_pose(robot_pose)
        objects = list(objects)
        req, path, note = self.understand(q, objects)
        text, refs, steps = self._answer(req, objects, pose)
        return Answer(text, refs, path, req, steps)

    def _answer(self, req: Request, objects: list[SceneObject], pose: np.ndarray):
        t = req.target
        if req.intent == "count":
            found = self._resolve(t, objects, pose)
            return f"There {'is' if len(found) == 1 else 'are'} {len(found)} {_plural(t.label or 'object', len(found))}" \
                   f"{' ' + t.describe().split(' ', 2)[-1].split(' ', 1)[-1] if t.relation else ''}.", found, []
        if req.intent == "attribute":
            found = self._resolve(t, objects, pose)
            if not found:
                return f"I see no {t.describe()[4:]} in the map.", [], []
            o = found[0]
            if req.attribute == "color":
                return f"The {o.label} is {object_color(o)}.", [o], []
            s = o.box.size
            return f"The {o.label} is {s[0]:.2f} m x {s[1]:.2f} m x {s[2]:.2f} m (w x d x h).", [o], []
        if req.intent == "relations":
            found = self._resolve(t, objects, pose)
            anchor = t.anchors[0].label if t.anchors else "it"
            rel = (t.relation or "near").replace("_", " ")
            if not found:
                return f"Nothing is {rel} the {anchor}.", [], []
            names = ", ".join(f"a {object_color(o)} {o.label}" for o in found[:8])
            return f"{rel.capitalize()} the {anchor}: {names}.", found, []
        if req.intent == "where":
            found = self._resolve(t, objects, pose)
            if not found:
                return f"I see no {t.describe()[4:]} in the map.", [], []
            return " ".join(self._where_sentence(o, objects) for o in found[:3]), found[:3], []
        if req.intent == "caption":
            return self._caption(t, objects, pose)
        if req.intent == "task":
            return self._task(req, objects, pose)
        found = self._resolve(t, objects, pose)
        if not found:
            return f"I see no {t.describe()[4:]} in the map.", [], []
        return f"{t.describe().capitalize()} is the {object_color(found[0])} {found[0].label} {_where(found[0])}.", found, []

    def _where_sentence(self, o: SceneObject, objects: list[SceneObject]) -> str:
        support = [s for s in objects if s is not o and is_on(o.box, s.box, self.config.on_tolerance_m)]
        on = f" on the {support[0].label}" if support else " on the floor" if o.box.min_xyz[2] < 0.05 else ""
        return f"The {object_color(o)} {o.label} is{on} {_where(o)}."

    def _caption(self, t: Phrase | None, objects: list[SceneObject], pose: np.ndarray):
        if t is not None:
            found = self._resolve(t, objects, pose)
            if not found:
                return f"I see no {t.describe()[4:]} in the map.", [], []
            o = found[0]
            s = o.box.size
            held = [x.label for x in objects if x is not o and is_on(x.box, o.box, self.config.on_tolerance_m)]
            extra = f" On it: {', '.join(held)}." if held else ""
            return (f"A {object_color(o)} {o.label}, {s[0]:.2f} x {s[1]:.2f} x {s[2]:.2f} m. "
                    f"{self._where_sentence(o, objects)}{extra}"), [o], []
        if not objects:
            return "The map has no objects yet.", [], []
        counts: dict[str, int] = {}
        for o in objects:
            counts[o.label] = counts.get(o.label, 0) + 1
        parts = [f"{n} {_plural(l, n)}" for l, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        lo = np.min([o.box.min_xyz for o in objects], 0)
        hi = np.max([o.box.max_xyz for o in objects], 0)
        on_pairs = [f"the {a.label} on the {b.label}" for a in objects for b in objects
                    if a is not b and is_on(a.box, b.box, self.config.on_tolerance_m)][:4]
        text = (f"The map holds {len(objects)} objects over {hi[0] - lo[0]:.1f} m x {hi[1] - lo[1]:.1f} m: "
                f"{', '.join(parts)}." + (f" Among them {', '.join(on_pairs)}." if on_pairs else ""))
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
                raise ValueError(f"cannot plan '{s.action} {s.target.describe()}': no such object in the map")
            o = found[0]
            half = 0.5 * float(np.max(o.box.max_xyz[:2] - o.box.min_xyz[:2]))
            steps.append(TaskStep(s.action, o.label, o, approach_pose(o.center[:2], pose[:2], self.config.standoff_m, half)))
            refs.append(o)
        text = "; ".join(f"{i + 1}. {st.action} {st.label}" + (f" (id {st.object.instance_id})" if st.object else "")
                         for i, st in enumerate(steps))
        return text, refs, steps
