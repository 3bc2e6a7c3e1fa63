"""Scoring the language interface on a phrasing set (test/data/phrasings): queries with expected answers on
synthetic scenes given by their generator parameters.

Answers are computed by ``Reasoner`` on the scenes' ground-truth objects (oriented boxes, GT colours): this
measures understanding and reasoning, not the fused map's perception (the relevancy route is not exercised;
a plain noun is resolved on the object labels). See the set's README for the expectation keys.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.grounding.objects import SceneObject
from lang3d_ros.llm.answer import Reasoner
from lang3d_ros.llm.request import Action
from lang3d_ros.llm.understand import AnsweredBy

GROUND_KINDS = ("ground", "relation", "superlative", "navigate")


@dataclass(frozen=True)
class PhrasingQuery:
    id: str
    scene: str
    kind: str
    text: str
    expect: dict


@dataclass
class PhrasingSet:
    robot_pose: tuple[float, float, float]
    scenes: dict[str, list[SceneObject]]
    queries: list[PhrasingQuery]


@dataclass
class Outcome:
    query: PhrasingQuery
    correct: bool
    answered_by: str
    """AnsweredBy value, or "error" when the reasoner raised something other than the expected NOT_FOUND."""
    seconds: float
    detail: str = ""
    scores: tuple[float, ...] = field(default_factory=tuple)


def load_phrasing_set(folder: str | Path) -> PhrasingSet:
    """Scenes (regenerated from their seeds) and queries of a phrasing-set folder."""
    from lang3d_ros.datasets.synthetic import generate_scene
    from lang3d_ros.llm.scenes import objects_from_ground_truth

    folder = Path(folder)
    meta = json.loads((folder / "scenes.json").read_text())
    scenes = {
        name: objects_from_ground_truth(generate_scene(int(p["seed"]), int(p["n_objects"])))
        for name, p in meta["scenes"].items()
    }
    queries = []
    for line in (folder / "phrasings.jsonl").read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            if d["scene"] not in scenes:
                raise ValueError(f"{d['id']}: unknown scene {d['scene']!r}")
            queries.append(PhrasingQuery(d["id"], d["scene"], d["kind"], d["text"], d["expect"]))
    return PhrasingSet(tuple(float(v) for v in meta["robot_pose"]), scenes, queries)


def _check(q: PhrasingQuery, reasoner: Reasoner, objects: list[SceneObject], pose) -> tuple[bool, str, str]:
    """(correct, answered_by, detail) of one query."""
    e = q.expect
    try:
        u = reasoner.understand(q.text, objects)
        if q.kind in GROUND_KINDS:
            a = reasoner.ground(q.text, objects, pose, understood=u)
            got = [o.instance_id for o in a.objects]
            return bool(got) and got[0] in e["ids"], str(a.path), f"{u.request.to_dict()} -> {got[:3]}"
        a = reasoner.ask(q.text, objects, pose, understood=u)
        ids = [o.instance_id for o in a.objects]
        detail = f"{u.request.to_dict()} -> {a.text[:80]!r} {ids[:4]}"
        if "not_found" in e:
            return False, str(a.path), detail
        if "count" in e:
            if q.kind == "caption":
                return f"{e['count']} objects" in a.text, str(a.path), detail
            m = re.search(r"\b(\d+)\b", a.text)
            return m is not None and int(m.group(1)) == e["count"], str(a.path), detail
        if "color" in e:
            return f" {e['color']}." in a.text or f" {e['color']} " in a.text, str(a.path), detail
        if "set" in e:
            return sorted(ids) == sorted(e["set"]), str(a.path), detail
        if "pick" in e:
            picks = [s.object.instance_id for s in a.steps if s.action == Action.PICK and s.object is not None]
            return picks[:1] == [e["pick"]], str(a.path), detail
        return bool(ids) and ids[0] in e["ids"], str(a.path), detail
    except Lang3DError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            return "not_found" in e, "not_found", str(exc)
        return False, "error", f"{exc.code.name}: {exc}"
    except ValueError as exc:
        return False, "error", str(exc)


def evaluate(pset: PhrasingSet, reasoner: Reasoner, queries: list[PhrasingQuery] | None = None) -> list[Outcome]:
    """One Outcome per query, in order."""
    pose = np.asarray(pset.robot_pose, dtype=float)
    out = []
    for q in queries if queries is not None else pset.queries:
        t0 = time.perf_counter()
        ok, by, detail = _check(q, reasoner, pset.scenes[q.scene], pose)
        out.append(Outcome(q, ok, by, time.perf_counter() - t0, detail))
    return out


def summary(outcomes: list[Outcome]) -> dict:
    """Accuracy overall and per kind, answered_by counts, and latency of the model-answered queries."""
    kinds = sorted({o.query.kind for o in outcomes})
    model_s = [o.seconds for o in outcomes if o.answered_by == AnsweredBy.LLM]
    return {
        "n": len(outcomes),
        "accuracy": float(np.mean([o.correct for o in outcomes])) if outcomes else 0.0,
        "per_kind": {
            k: (sum(o.correct for o in outcomes if o.query.kind == k), sum(o.query.kind == k for o in outcomes))
            for k in kinds
        },
        "answered_by": {
            b: sum(o.answered_by == b for o in outcomes) for b in sorted({o.answered_by for o in outcomes})
        },
        "model_p50_s": float(np.median(model_s)) if model_s else None,
        "p50_s": float(np.median([o.seconds for o in outcomes])) if outcomes else None,
    }
