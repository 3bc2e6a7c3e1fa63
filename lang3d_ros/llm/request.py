"""The structured request a query is turned into, its schema validator, and bounded JSON parsing.

A ``Phrase`` names objects: a label (``""`` = any object), optional colour and size, an optional
relation to anchor phrases, an optional superlative (closest/farthest measured to
``reference``, or to the robot when there is none). Phrases nest up to ``MAX_DEPTH`` levels.
The validator checks types, enumerations and sizes; it cannot tell whether the labels are right.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from lang3d_ros.llm.colors import canonical_color


class Intent(StrEnum):
    """What a request asks for (the strings are part of the ROS and JSON interfaces)."""

    GROUND = "ground"
    COUNT = "count"
    ATTRIBUTE = "attribute"
    RELATIONS = "relations"
    WHERE = "where"
    CAPTION = "caption"
    TASK = "task"


class Relation(StrEnum):
    """A spatial relation between a phrase and its anchor(s), computed on boxes in ``relations.py``."""

    ON = "on"
    UNDER = "under"
    NEAR = "near"
    LEFT_OF = "left_of"
    RIGHT_OF = "right_of"
    IN_FRONT_OF = "in_front_of"
    BEHIND = "behind"
    BETWEEN = "between"


class Superlative(StrEnum):
    """Orders a phrase's matches; closest/farthest measure to ``Phrase.reference`` or to the robot."""

    CLOSEST = "closest"
    FARTHEST = "farthest"
    LARGEST = "largest"
    SMALLEST = "smallest"
    LEFTMOST = "leftmost"
    RIGHTMOST = "rightmost"
    HIGHEST = "highest"
    LOWEST = "lowest"


class Size(StrEnum):
    LARGE = "large"
    SMALL = "small"


class Attribute(StrEnum):
    """What an ``attribute`` question asks about."""

    COLOR = "color"
    SIZE = "size"


class Action(StrEnum):
    """A task step the navigation / manipulation stack executes."""

    GOTO = "goto"
    PICK = "pick"
    PLACE = "place"


RELATIONS = tuple(r.value for r in Relation)
SUPERLATIVES = tuple(s.value for s in Superlative)
SIZES = tuple(s.value for s in Size)
INTENTS = tuple(i.value for i in Intent)
ATTRIBUTES = tuple(a.value for a in Attribute)
ACTIONS = tuple(a.value for a in Action)
MAX_DEPTH = 3
MAX_LABEL_CHARS = 48
MAX_STEPS = 8
MAX_JSON_CHARS = 2000


def _as(enum_type, value):
    """``value`` as a member of ``enum_type`` (None stays None); ValueError names the allowed values."""
    if value is None or isinstance(value, enum_type):
        return value
    try:
        return enum_type(value)
    except ValueError:
        raise ValueError(f"{value!r} is not one of {[m.value for m in enum_type]}") from None


@dataclass(frozen=True)
class Phrase:
    """Names objects. Enumerated fields are stored as their enums (plain strings are converted on creation)."""

    label: str = ""
    """Object label; "" matches any object."""
    color: str | None = None
    size: Size | None = None
    relation: Relation | None = None
    anchors: tuple["Phrase", ...] = ()
    superlative: Superlative | None = None
    reference: "Phrase | None" = None
    """What closest/farthest measure to; None -> the robot."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _as(Size, self.size))
        object.__setattr__(self, "relation", _as(Relation, self.relation))
        object.__setattr__(self, "superlative", _as(Superlative, self.superlative))
        object.__setattr__(self, "anchors", tuple(self.anchors))

    def to_dict(self) -> dict:
        d: dict = {"label": self.label}
        for k in ("color", "size", "relation", "superlative"):
            if getattr(self, k) is not None:
                d[k] = str(getattr(self, k))
        if self.anchors:
            d["anchors"] = [a.to_dict() for a in self.anchors]
        if self.reference is not None:
            d["reference"] = self.reference.to_dict()
        return d

    def labels(self) -> list[str]:
        """Every label named in this phrase and its anchors."""
        out = [self.label] if self.label else []
        for a in self.anchors:
            out += a.labels()
        if self.reference is not None:
            out += self.reference.labels()
        return out

    def describe(self) -> str:
        """Short English rendering, e.g. 'the red mug on the table'."""
        words = [
            w
            for w in (
                self.superlative if self.superlative not in ("closest", "farthest") else None,
                self.size,
                self.color,
                self.label or "object",
            )
            if w
        ]
        s = "the " + " ".join(words)
        if self.relation == "between" and len(self.anchors) == 2:
            s += f" between {self.anchors[0].describe()} and {self.anchors[1].describe()}"
        elif self.relation:
            s += f" {self.relation.replace('_', ' ')} {self.anchors[0].describe()}"
        if self.superlative in ("closest", "farthest"):
            s += f" {self.superlative} to " + (self.reference.describe() if self.reference else "the robot")
        return s


@dataclass(frozen=True)
class Step:
    action: Action
    target: Phrase

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", _as(Action, self.action))


@dataclass(frozen=True)
class Request:
    intent: Intent
    target: Phrase | None = None
    attribute: Attribute | None = None
    """Intent "attribute": what is asked."""
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "intent", _as(Intent, self.intent))
        object.__setattr__(self, "attribute", _as(Attribute, self.attribute))
        object.__setattr__(self, "steps", tuple(self.steps))

    def to_dict(self) -> dict:
        d: dict = {"intent": str(self.intent)}
        if self.target is not None:
            d["target"] = self.target.to_dict()
        if self.attribute is not None:
            d["attribute"] = str(self.attribute)
        if self.steps:
            d["steps"] = [{"action": str(s.action), "target": s.target.to_dict()} for s in self.steps]
        return d


def _text(v, key: str, allow_none: bool = True) -> str | None:
    if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none", "null")):
        if allow_none:
            return None
        raise ValueError(f"{key} is required")
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a string, got {type(v).__name__}")
    v = " ".join(v.strip().lower().split())
    if len(v) > MAX_LABEL_CHARS:
        raise ValueError(f"{key} is longer than {MAX_LABEL_CHARS} characters")
    return v


def _enum(v, key: str, allowed: tuple[str, ...]) -> str | None:
    v = _text(v, key)
    if v is None:
        return None
    v = v.replace(" ", "_").replace("-", "_")
    if v not in allowed:
        raise ValueError(f"{key} must be one of {allowed}, got {v!r}")
    return v


def phrase_from_dict(d, depth: int = 0, key: str = "target") -> Phrase:
    """Validate one phrase mapping (or a bare label string) -> Phrase. ValueError names the bad key."""
    if depth >= MAX_DEPTH:
        raise ValueError(f"{key}: phrases nest at most {MAX_DEPTH} levels")
    if isinstance(d, str):
        d = {"label": d}
    if not isinstance(d, dict):
        raise ValueError(f"{key} must be a mapping, got {type(d).__name__}")
    unknown = set(d) - {"label", "color", "size", "relation", "anchors", "superlative", "reference"}
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {sorted(unknown)}")
    label = _text(d.get("label"), f"{key}.label") or ""
    if label in ("object", "objects", "thing", "things", "anything", "something"):
        label = ""
    color = _text(d.get("color"), f"{key}.color")
    if color is not None and canonical_color(color) is None:
        raise ValueError(f"{key}.color: {color!r} is not a known colour")
    color = canonical_color(color) if color else None
    size = _enum(d.get("size"), f"{key}.size", SIZES)
    relation = _enum(d.get("relation"), f"{key}.relation", RELATIONS)
    superlative = _enum(d.get("superlative"), f"{key}.superlative", SUPERLATIVES)
    raw_anchors = d.get("anchors") or []
    if not isinstance(raw_anchors, list) or len(raw_anchors) > 2:
        raise ValueError(f"{key}.anchors must be a list of at most 2 phrases")
    anchors = tuple(phrase_from_dict(a, depth + 1, f"{key}.anchors[{i}]") for i, a in enumerate(raw_anchors))
    need = 2 if relation == "between" else 1 if relation else 0
    if len(anchors) != need:
        raise ValueError(f"{key}: relation {relation!r} needs {need} anchor(s), got {len(anchors)}")
    ref = d.get("reference")
    reference = None if ref in (None, "", "robot", "me") else phrase_from_dict(ref, depth + 1, f"{key}.reference")
    if reference is not None and superlative not in ("closest", "farthest"):
        raise ValueError(f"{key}.reference only goes with closest/farthest")
    return Phrase(label, color, size, relation, anchors, superlative, reference)


def request_from_dict(d) -> Request:
    """Validate a request mapping against the schema -> Request, or ValueError saying what is wrong."""
    if not isinstance(d, dict):
        raise ValueError(f"request must be a mapping, got {type(d).__name__}")
    unknown = set(d) - {"intent", "target", "attribute", "steps"}
    if unknown:
        raise ValueError(f"request: unknown key(s) {sorted(unknown)}")
    intent = _enum(d.get("intent", "ground"), "intent", INTENTS)
    target = None if d.get("target") in (None, "") else phrase_from_dict(d["target"])
    attribute = _enum(d.get("attribute"), "attribute", ATTRIBUTES)
    raw_steps = d.get("steps") or []
    if not isinstance(raw_steps, list) or len(raw_steps) > MAX_STEPS:
        raise ValueError(f"steps must be a list of at most {MAX_STEPS}")
    steps = []
    for i, s in enumerate(raw_steps):
        if not isinstance(s, dict) or set(s) - {"action", "target"}:
            raise ValueError(f"steps[{i}] must be a mapping with action and target")
        steps.append(
            Step(
                _enum(s.get("action"), f"steps[{i}].action", ACTIONS) or "goto",
                phrase_from_dict(s.get("target"), 1, f"steps[{i}].target"),
            )
        )
    if intent == "task" and not steps:
        raise ValueError("a task needs at least one step")
    if intent in ("ground", "count", "attribute", "where", "relations") and target is None:
        raise ValueError(f"intent {intent!r} needs a target")
    if intent == "attribute" and attribute is None:
        raise ValueError("intent 'attribute' needs attribute (color or size)")
    return Request(intent, target, attribute, tuple(steps))


def _json_depth(v, depth: int = 0) -> int:
    if isinstance(v, dict):
        return max([depth + 1] + [_json_depth(x, depth + 1) for x in v.values()])
    if isinstance(v, list):
        return max([depth + 1] + [_json_depth(x, depth + 1) for x in v])
    return depth


def extract_json_object(text: str, max_chars: int = MAX_JSON_CHARS, max_depth: int = 8):
    """The first balanced ``{...}`` in ``text`` parsed as JSON. ValueError when there is none, when it
    is longer than ``max_chars`` or nests deeper than ``max_depth``."""
    if not isinstance(text, str):
        raise ValueError("model output must be a string")
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the model output")
    depth, in_str, esc = 0, False, False
    for i in range(start, min(len(text), start + max_chars)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
            if depth > max_depth:
                raise ValueError(f"JSON nests deeper than {max_depth}")
        elif ch == "}":
            depth -= 1
            if depth == 0:
                try:
                    obj = json.loads(text[start : i + 1])
                except json.JSONDecodeError as exc:
                    raise ValueError(f"invalid JSON in the model output: {exc.msg}") from exc
                if _json_depth(obj) > max_depth:
                    raise ValueError(f"JSON nests deeper than {max_depth}")
                return obj
    raise ValueError(f"no complete JSON object within {max_chars} characters of model output")
