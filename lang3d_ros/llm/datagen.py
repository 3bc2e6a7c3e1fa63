"""3D-LLM style training samples from a scene's boxes and labels (boxes-demonstration-instruction).

Templates over map facts produce grounding, QA, caption and navigation samples whose answers
carry location tokens; an optional backend rephrases the instruction (kept only when it still names
the same objects). Templates cover the relations of ``lang3d_ros.llm.relations``; they cannot
produce dialogue or free-form reasoning.
"""
from __future__ import annotations

import json
import logging
from typing import Sequence

import numpy as np

from lang3d_ros.grounding.objects import SceneObject
from lang3d_ros.llm.colors import color_name
from lang3d_ros.llm.labels import singular
from lang3d_ros.llm.location import LocationGrid
from lang3d_ros.llm.parser import tokenize
from lang3d_ros.llm.relations import is_on
from lang3d_ros.llm.scenes import scene_text

log = logging.getLogger(__name__)
TASKS = ("grounding", "qa", "caption", "navigation")


def _unique(pred, objects) -> SceneObject | None:
    hits = [o for o in objects if pred(o)]
    return hits[0] if len(hits) == 1 else None


def generate_samples(objects: Sequence[SceneObject], grid: LocationGrid, rng: np.random.Generator,
                     rephrase=None, max_per_task: int = 20) -> list[dict]:
    """List of {"task", "scene", "instruction", "response"} dicts; responses use location tokens."""
    objects = list(objects)
    if not objects:
        raise ValueError("need at least one object to generate samples")
    scene = scene_text(objects, grid)
    out: list[dict] = []
    labels = sorted({o.label for o in objects})

    def add(task, instr, resp):
        if rephrase is not None:
            instr = _rephrased(rephrase, instr)
        out.append({"task": task, "scene": scene, "instruction": instr, "response": resp})

    g: list[tuple[str, SceneObject]] = []
    for o in objects:
        if _unique(lambda x: x.label == o.label, objects) is o:
            g.append((f"the {o.label}", o))
        col = color_name(o.color_rgb)
        if _unique(lambda x: x.label == o.label and color_name(x.color_rgb) == col, objects) is o:
            g.append((f"the {col} {o.label}", o))
        for s in objects:
            if s is not o and is_on(o.box, s.box) and _unique(
                    lambda x: x.label == o.label and any(is_on(x.box, y.box) and y.label == s.label
                                                         for y in objects), objects) is o:
                g.append((f"the {o.label} on the {s.label}", o))
    for k in rng.permutation(len(g))[:max_per_task]:
        text, o = g[k]
        add("grounding", f"Find {text}.", grid.box_to_tokens(o.box))
    for lab in labels[:max_per_task]:
        n = sum(o.label == lab for o in objects)
        add("qa", f"How many {lab}s are there?", str(n))
    for o in list(rng.permutation(objects))[:max_per_task]:
        add("qa", f"What colour is the {o.label} at {grid.box_to_tokens(o.box)}?", color_name(o.color_rgb))
    counts = ", ".join(f"{sum(o.label == l for o in objects)} {l}" for l in labels)
    add("caption", "Describe the scene.", f"A room with {counts}.")
    for text, o in [g[k] for k in rng.permutation(len(g))[:max_per_task]]:
        add("navigation", f"Go to {text}.", f"goto {grid.box_to_tokens(o.box)}")
    return out


def _rephrased(rephrase, instr: str) -> str:
    """Ask ``rephrase(messages) -> str`` for a paraphrase; keep the template when nouns change."""
    try:
        text = rephrase([{"role": "system", "content": "Rephrase the user's sentence. Keep every object word."},
                         {"role": "user", "content": instr}])
    except Exception as exc:  # a rephrasing model is optional; any failure keeps the template
        log.debug("rephrase failed: %s", exc)
        return instr
    text = " ".join(str(text).split())[:200]
    need = {singular(w) for w in tokenize(instr) if "loc" not in w}
    have = {singular(w) for w in tokenize(text)}
    keep_loc = all(t in text for t in instr.split() if t.startswith("<loc"))
    return text if text and keep_loc and need.issubset(have | {"the", "a", "find", "go", "to", "how", "many", "are",
                                                                  "there",
                                                                  "what", "is", "describe"}) else instr


def write_jsonl(samples: Sequence[dict], path) -> int:
    """Write samples as JSON lines; returns the count."""
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    return len(samples)


def read_jsonl(path, max_samples: int = 1_000_000) -> list[dict]:
    """Read samples back; ValueError on a line that lacks instruction/response."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= max_samples:
                break
            if not line.strip():
                continue
            d = json.loads(line)
            if not isinstance(d, dict) or not isinstance(d.get("instruction"), str) or \
                    not isinstance(d.get("response"), str):
                raise ValueError(f"{path}:{i + 1}: each line needs string instruction and response")
            out.append(d)
    return out
