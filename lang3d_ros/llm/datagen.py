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


def generate_samples(
    objects: Sequence[SceneObject], grid: LocationGrid, rng: np.random.Generator, rephrase=None, max_per_task: int = 20
) -> list[dict]:
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
            if (
                s is not o
                and is_on(o.box, s.box)
                and _unique(
                    lambda x: x.label == o.label and any(is_on(x.box, y.box) and y.label == s.label for y in objects),
                    objects,
                )
                is o
            ):
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
        text = rephrase(
            [
                {"role": "system", "content": "Rephrase the user's sentence. Keep every object word."},
                {"role": "user", "content": instr},
            ]
        )
    except Exception as exc:  # a rephrasing model is optional; any failure keeps the template
        log.debug("rephrase failed: %s", exc)
        return instr
    text = " ".join(str(text).split())[:200]
    need = {singular(w) for w in tokenize(instr) if "loc" not in w}
    have = {singular(w) for w in tokenize(text)}
    keep_loc = all(t in text for t in instr.split() if t.startswith("<loc"))
    return (
        text
        if text
        and keep_loc
        and need.issubset(
            have | {"the", "a", "find", "go", "to", "how", "many", "are", "there", "what", "is", "describe"}
        )
        else instr
    )


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
            if (
                not isinstance(d, dict)
                or not isinstance(d.get("instruction"), str)
                or not isinstance(d.get("response"), str)
            ):
                raise ValueError(f"{path}:{i + 1}: each line needs string instruction and response")
            out.append(d)
    return out


# --------------------------------------------------------------------------------------------------------------
# The 3D-LLM data recipe for the language interface: (scene with location tokens + instruction) -> the request JSON
# the model writes under the grammar. A paraphrase grammar varies the wording; splits hold out templates,
# relation x attribute combinations, labels and scenes. Its synonyms are for training only: the frozen phrasing
# set (test/data/phrasings) was written separately and is never generated from or trained on.
LEAD_INS = (
    "",
    "",
    "find ",
    "show me ",
    "where's ",
    "locate ",
    "can you find ",
    "i'm looking for ",
    "point me to ",
    "look for ",
)
NAV_LEAD_INS = (
    "go to ",
    "take me to ",
    "head over to ",
    "navigate to ",
    "i need you to go to ",
    "drive to ",
    "could you go to ",
)
POLITE_START = ("", "", "", "please ", "hey robot ", "robot, ")
POLITE_VERB_START = ("could you ", "can you ", "i need you to ", "would you ")
VERBS = ("find", "show", "locate", "look", "point", "go", "take", "head", "navigate", "drive", "count")
POLITE_END = ("", "", "", " please", " for me", " thanks", " now")
TRAIN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sofa": ("couch", "settee"),
    "trash can": ("bin", "garbage can", "wastebasket"),
    "mug": ("cup", "coffee mug"),
    "monitor": ("screen", "display"),
    "laptop": ("notebook", "laptop computer"),
    "plant": ("potted plant",),
    "backpack": ("bag", "rucksack"),
    "shelf": ("bookshelf", "shelves"),
    "cabinet": ("cupboard",),
    "pillow": ("cushion",),
    "lamp": ("light",),
    "toy car": ("toy truck", "little car"),
    "stool": ("footstool",),
    "bowl": ("dish",),
    "bottle": ("water bottle",),
    "box": ("carton",),
    "ball": ("football",),
    "keyboard": ("computer keyboard",),
    "vase": ("flower vase",),
    "table": ("desk",),
    "book": ("novel",),
}
TEMPLATES = (
    "plain",
    "color",
    "on",
    "near",
    "superlative",
    "closest_to",
    "count",
    "count_on",
    "color_question",
    "where",
    "relations_on",
    "navigate",
)


def _typo(word: str, rng: np.random.Generator) -> str:
    """Two neighbouring letters swapped (words of four letters or more)."""
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 2))
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def paraphrase(text: str, rng: np.random.Generator, typo_p: float = 0.05, speech_p: float = 0.5) -> str:
    """Politeness before / after, speech-like lower case without punctuation (``speech_p``), an occasional typo
    in one word (``typo_p``). Lead-ins and synonyms are chosen by the templates (they change the request)."""
    start = POLITE_START + (POLITE_VERB_START if text.split()[0] in VERBS else ())
    out = f"{rng.choice(start)}{text}{rng.choice(POLITE_END)}"
    if rng.random() < typo_p:
        words = out.split()
        k = int(rng.integers(len(words)))
        words[k] = _typo(words[k], rng)
        out = " ".join(words)
    if rng.random() < speech_p:
        return " ".join(out.lower().replace(",", " ").replace("?", " ").replace(".", " ").split())
    out = out[:1].upper() + out[1:]
    return out + ("?" if out.split()[0].lower() in ("where's", "how", "what", "can", "could") else ".")


def _name(label: str, rng: np.random.Generator, synonym_p: float) -> str:
    syn = TRAIN_SYNONYMS.get(label, ())
    return str(rng.choice(syn)) if syn and rng.random() < synonym_p else label


def _plural_word(label: str) -> str:
    return label + ("es" if label.endswith(("s", "x", "ch", "sh")) else "s")


def request_samples(
    objects: Sequence[SceneObject],
    grid: LocationGrid,
    rng: np.random.Generator,
    scene_id: str,
    per_template: int = 3,
    synonym_p: float = 0.3,
) -> list[dict]:
    """Training pairs for the request model from one scene's objects: {"scene_id", "scene" (objects with
    location tokens), "instruction" (paraphrased), "response" (the request JSON in the grammar's format),
    "template", "labels", "relation", "attribute"}. The response is what the sentence asks for, whether or not
    the scene has a unique answer (the model structures the text; the geometry is resolved in code)."""
    from lang3d_ros.llm.constrained import dumps, request_to_model_json
    from lang3d_ros.llm.request import Phrase, Request

    objects = list(objects)
    if not objects:
        raise ValueError("need at least one object to generate samples")
    scene = scene_text(objects, grid)
    labels = sorted({o.label for o in objects})
    col = {o.instance_id: color_name(o.color_rgb) for o in objects}
    on = [(o, s) for o in objects for s in objects if s is not o and is_on(o.box, s.box)]
    out: list[dict] = []

    def add(template: str, text: str, req: Request, relation: str = "", attribute: str = "") -> None:
        out.append(
            {
                "scene_id": scene_id,
                "scene": scene,
                "instruction": paraphrase(text, rng),
                "response": dumps(request_to_model_json(req)),
                "template": template,
                "labels": sorted(set(req.target.labels())) if req.target is not None else [],
                "relation": relation,
                "attribute": attribute,
            }
        )

    for _ in range(per_template):
        o = objects[int(rng.integers(len(objects)))]
        name = _name(o.label, rng, synonym_p)
        add("plain", f"{rng.choice(LEAD_INS)}the {name}", Request("ground", Phrase(o.label)))
        add(
            "color",
            f"{rng.choice(LEAD_INS)}the {col[o.instance_id]} {name}",
            Request("ground", Phrase(o.label, col[o.instance_id])),
            attribute=col[o.instance_id],
        )
        add("navigate", f"{rng.choice(NAV_LEAD_INS)}the {name}", Request("ground", Phrase(o.label)))
        add("where", f"where is the {name}", Request("where", Phrase(o.label)))
        add("color_question", f"what colour is the {name}", Request("attribute", Phrase(o.label), "color"))
        lab = labels[int(rng.integers(len(labels)))]
        add(
            "count",
            f"{rng.choice(('how many ', 'count the ', 'how many '))}{_plural_word(_name(lab, rng, synonym_p))}"
            f"{rng.choice(('', ' are there', ' do you see', ' in this room'))}",
            Request("count", Phrase(lab)),
        )
        sup = str(rng.choice(("closest", "farthest", "largest", "smallest", "leftmost", "rightmost", "highest")))
        add("superlative", f"the {sup} {name}", Request("ground", Phrase(o.label, superlative=sup)), sup)
        ref = objects[int(rng.integers(len(objects)))]
        if ref.label != o.label:
            add(
                "closest_to",
                f"the {name} closest to the {_name(ref.label, rng, synonym_p)}",
                Request("ground", Phrase(o.label, superlative="closest", reference=Phrase(ref.label))),
                "closest",
            )
        near = [x for x in objects if x is not o and x.label != o.label]
        if near:
            x = near[int(rng.integers(len(near)))]
            add(
                "near",
                f"the {name} {rng.choice(('near', 'next to', 'by'))} the {_name(x.label, rng, synonym_p)}",
                Request("ground", Phrase(o.label, relation="near", anchors=(Phrase(x.label),))),
                "near",
            )
        if on:
            a, s = on[int(rng.integers(len(on)))]
            c = col[a.instance_id] if rng.random() < 0.5 else None
            add(
                "on",
                f"the {(c + ' ') if c else ''}{_name(a.label, rng, synonym_p)} on the {_name(s.label, rng, synonym_p)}",
                Request("ground", Phrase(a.label, c, relation="on", anchors=(Phrase(s.label),))),
                "on",
                c or "",
            )
            add(
                "count_on",
                f"how many things are on the {_name(s.label, rng, synonym_p)}",
                Request("count", Phrase("", relation="on", anchors=(Phrase(s.label),))),
                "on",
            )
            add(
                "relations_on",
                f"what is on the {_name(s.label, rng, synonym_p)}",
                Request("relations", Phrase("", relation="on", anchors=(Phrase(s.label),))),
                "on",
            )
    return out


def split_samples(
    samples: Sequence[dict],
    rng: np.random.Generator,
    held_templates: Sequence[str] = ("near",),
    held_combos: Sequence[tuple[str, str]] = (("on", "red"), ("closest", "")),
    held_labels: Sequence[str] = ("vase", "stool"),
    held_scenes: Sequence[str] = (),
) -> dict:
    """Splits for honest evaluation of generated data: ``test_template`` (templates never trained on),
    ``test_combo`` (relation x attribute pairs never trained on), ``test_label`` (samples naming a held-out
    label), ``test_scene`` (held-out scenes), and ``train`` (none of these). A sample lands in the first held-out
    split it belongs to. ``rng`` only shuffles each split."""
    out: dict[str, list[dict]] = {k: [] for k in ("train", "test_template", "test_combo", "test_label", "test_scene")}
    combos = {tuple(c) for c in held_combos}
    for s in samples:
        if s["template"] in held_templates:
            out["test_template"].append(s)
        elif (s["relation"], s["attribute"]) in combos:
            out["test_combo"].append(s)
        elif set(s["labels"]) & set(held_labels):
            out["test_label"].append(s)
        elif s["scene_id"] in held_scenes:
            out["test_scene"].append(s)
        else:
            out["train"].append(s)
    for v in out.values():
        rng.shuffle(v)
    return out
