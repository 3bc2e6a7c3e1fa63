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
from lang3d_ros.llm.labels import plural, singular
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
    "size_question",
    "size",
    "count_color",
    "side",
    "between",
    "relations_near",
    "absent",
    "caption",
    "under",
    "count_label_on",
    "where_on",
    "color_on",
    "thing_on",
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


ABSENT_NOUNS = (
    "piano",
    "guitar",
    "oven",
    "toaster",
    "umbrella",
    "clock",
    "printer",
    "bicycle",
    "mirror",
    "kettle",
    "painting",
    "phone",
    "scissors",
    "microwave",
    "towel",
    "candle",
    "basket",
    "drum",
    "helmet",
    "jacket",
)
"""Household nouns no synthetic scene holds: queries naming them (or a catalogue label the scene lacks) train the
answer "other" (nothing in the map)."""
SIZE_WORDS = {"large": ("big", "large", "huge"), "small": ("small", "little", "tiny")}
SUPERLATIVE_WORDS = {
    "closest": ("closest", "nearest"),
    "farthest": ("farthest", "furthest"),
    "largest": ("largest", "biggest"),
    "smallest": ("smallest", "tiniest"),
    "leftmost": ("leftmost",),
    "rightmost": ("rightmost",),
    "highest": ("highest", "topmost"),
    "lowest": ("lowest",),
}
RELATION_WORDS = {
    "on": ("on", "on top of", "sitting on", "that is on"),
    "under": ("under", "below", "beneath", "underneath"),
    "near": ("near", "next to", "by", "beside", "close to"),
    "left_of": ("to the left of", "left of", "on the left of"),
    "right_of": ("to the right of", "right of", "on the right of"),
    "in_front_of": ("in front of",),
    "behind": ("behind", "in back of"),
}
COUNT_LEADS = ("how many ", "count the ", "how many ", "what is the number of ", "can you count the ")
COUNT_TAILS = ("", " are there", " do you see", " in this room", " can you see", " are in the room")
WHERE_LEADS = ("where is the ", "where's the ", "where did i leave the ", "where can i find the ")
COLOR_Q = ("what colour is the ", "what color is the ", "which colour is the ", "what color's the ")
SIZE_Q = ("how big is the ", "what size is the ", "how large is the ")
THING = ("thing", "object", "one", "item")
CAPTIONS = ("describe the room", "what do you see", "describe the scene", "tell me about the room")


def request_samples(
    objects: Sequence[SceneObject],
    grid: LocationGrid,
    rng: np.random.Generator,
    scene_id: str,
    per_template: int = 3,
    synonym_p: float = 0.3,
    absent_labels: Sequence[str] = (),
) -> list[dict]:
    """Training pairs for the request model from one scene's objects: {"scene_id", "scene" (objects with
    location tokens), "objects" (the scene's labels), "instruction" (paraphrased), "request" (the Request as a
    dict), "response" (the request JSON in the grammar's full format), "template", "labels", "relation",
    "attribute"}. The response is what the sentence asks for, whether or not the scene has a unique answer (the
    model structures the text; the geometry is resolved in code). ``absent_labels``: nouns the scene lacks,
    for the "absent" template (answer: label "other")."""
    from lang3d_ros.llm.constrained import OTHER, dumps, request_to_model_json
    from lang3d_ros.llm.request import Phrase, Request

    objects = list(objects)
    if not objects:
        raise ValueError("need at least one object to generate samples")
    scene = scene_text(objects, grid)
    labels = sorted({o.label for o in objects})
    absent = [a for a in absent_labels if a not in labels] or [a for a in ABSENT_NOUNS if a not in labels]
    col = {o.instance_id: color_name(o.color_rgb) for o in objects}
    on = [(o, s) for o in objects for s in objects if s is not o and is_on(o.box, s.box)]
    out: list[dict] = []

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    def add(template: str, text: str, req: Request, relation: str = "", attribute: str = "") -> None:
        out.append(
            {
                "scene_id": scene_id,
                "scene": scene,
                "objects": labels,
                "instruction": paraphrase(text, rng),
                "request": req.to_dict(),
                "response": dumps(request_to_model_json(req)),
                "template": template,
                "labels": sorted(set(req.target.labels())) if req.target is not None else [],
                "relation": relation,
                "attribute": attribute,
            }
        )

    for _ in range(per_template):
        o = pick(objects)
        name = _name(o.label, rng, synonym_p)
        c = col[o.instance_id]
        add("plain", f"{pick(LEAD_INS)}the {name}", Request("ground", Phrase(o.label)))
        add("color", f"{pick(LEAD_INS)}the {c} {name}", Request("ground", Phrase(o.label, c)), attribute=c)
        add("navigate", f"{pick(NAV_LEAD_INS)}the {name}", Request("ground", Phrase(o.label)))
        add("where", f"{pick(WHERE_LEADS)}{name}", Request("where", Phrase(o.label)))
        add("color_question", f"{pick(COLOR_Q)}{name}", Request("attribute", Phrase(o.label), "color"))
        add("size_question", f"{pick(SIZE_Q)}{name}", Request("attribute", Phrase(o.label), "size"))
        size = str(pick(("large", "small")))
        add(
            "size",
            f"{pick(LEAD_INS)}the {pick(SIZE_WORDS[size])} {name}",
            Request("ground", Phrase(o.label, size=size)),
            attribute=size,
        )
        lab = pick(labels)
        add(
            "count",
            f"{pick(COUNT_LEADS)}{plural(_name(lab, rng, synonym_p))}{pick(COUNT_TAILS)}",
            Request("count", Phrase(lab)),
        )
        cc = str(pick(sorted(set(col.values()))))
        add(
            "count_color",
            f"{pick(COUNT_LEADS)}{cc} {pick(('things', 'objects', 'items'))}{pick(COUNT_TAILS)}",
            Request("count", Phrase("", cc)),
            attribute=cc,
        )
        sup = str(pick(tuple(SUPERLATIVE_WORDS)))
        add(
            "superlative",
            f"{pick(LEAD_INS)}the {pick(SUPERLATIVE_WORDS[sup])} {name}",
            Request("ground", Phrase(o.label, superlative=sup)),
            sup,
        )
        ref = pick(objects)
        if ref.label != o.label:
            sup = str(pick(("closest", "farthest")))
            word = {"closest": ("closest to", "nearest to", "nearest"), "farthest": ("farthest from", "furthest from")}
            add(
                "closest_to",
                f"{pick(LEAD_INS)}the {name} {pick(word[sup])} the {_name(ref.label, rng, synonym_p)}",
                Request("ground", Phrase(o.label, superlative=sup, reference=Phrase(ref.label))),
                sup,
            )
        others = [x for x in objects if x.label != o.label]
        if others:
            x = pick(others)
            rel = str(pick(("near", "left_of", "right_of", "in_front_of", "behind")))
            add(
                "near" if rel == "near" else "side",
                f"{pick(LEAD_INS)}the {name} {pick(RELATION_WORDS[rel])} the {_name(x.label, rng, synonym_p)}",
                Request("ground", Phrase(o.label, relation=rel, anchors=(Phrase(x.label),))),
                rel,
            )
            y = pick(others)
            if y.label != x.label:
                add(
                    "between",
                    f"{pick(LEAD_INS)}the {name} between the {_name(x.label, rng, synonym_p)} and the "
                    f"{_name(y.label, rng, synonym_p)}",
                    Request("ground", Phrase(o.label, relation="between", anchors=(Phrase(x.label), Phrase(y.label)))),
                    "between",
                )
            add(
                "relations_near",
                f"what is {pick(RELATION_WORDS['near'][:3])} the {_name(x.label, rng, synonym_p)}",
                Request("relations", Phrase("", relation="near", anchors=(Phrase(x.label),))),
                "near",
            )
        lead = str(pick(LEAD_INS + NAV_LEAD_INS + WHERE_LEADS[:2]))
        add(
            "absent",
            f"{lead}the {pick(absent)}",
            Request("where" if lead.startswith("where") else "ground", Phrase(OTHER)),
        )
        if rng.random() < 0.3:
            add("caption", str(pick(CAPTIONS)), Request("caption"))
        if on:
            a, s = pick(on)
            ac = col[a.instance_id] if rng.random() < 0.5 else None
            an, sn = _name(a.label, rng, synonym_p), _name(s.label, rng, synonym_p)
            add(
                "on",
                f"{pick(LEAD_INS)}the {(ac + ' ') if ac else ''}{an} {pick(RELATION_WORDS['on'])} the {sn}",
                Request("ground", Phrase(a.label, ac, relation="on", anchors=(Phrase(s.label),))),
                "on",
                ac or "",
            )
            add(
                "under",
                f"{pick(LEAD_INS)}the {sn} {pick(RELATION_WORDS['under'])} the {an}",
                Request("ground", Phrase(s.label, relation="under", anchors=(Phrase(a.label),))),
                "under",
            )
            add(
                "count_on",
                f"how many {pick(('things', 'objects', 'items'))} are on the {sn}",
                Request("count", Phrase("", relation="on", anchors=(Phrase(s.label),))),
                "on",
            )
            add(
                "count_label_on",
                f"how many {plural(an)} are on the {sn}",
                Request("count", Phrase(a.label, relation="on", anchors=(Phrase(s.label),))),
                "on",
            )
            add(
                "relations_on",
                f"{pick(('what is on ', 'what is on top of ', 'what is sitting on ', 'what things are on '))}the {sn}",
                Request("relations", Phrase("", relation="on", anchors=(Phrase(s.label),))),
                "on",
            )
            add(
                "where_on",
                f"{pick(WHERE_LEADS)}{an} on the {sn}",
                Request("where", Phrase(a.label, relation="on", anchors=(Phrase(s.label),))),
                "on",
            )
            add(
                "color_on",
                f"{pick(COLOR_Q)}{an} on the {sn}",
                Request("attribute", Phrase(a.label, relation="on", anchors=(Phrase(s.label),)), "color"),
                "on",
            )
            add(
                "thing_on",
                f"{pick(LEAD_INS)}the {ac or col[a.instance_id]} {pick(THING)} on the {sn}",
                Request("ground", Phrase("", ac or col[a.instance_id], relation="on", anchors=(Phrase(s.label),))),
                "on",
                ac or col[a.instance_id],
            )
    return out


def adapter_sample(sample: dict, matcher=None, config=None) -> dict | None:
    """A ``request_samples`` sample as the adapter is trained on it: {"prompt": ``constrained.adapter_prompt``
    (the labels the grammar offers for the sentence + the sentence), "response": the request in the compact form
    the grammar lets the model write for it}, or None when the grammar could not write the request (a typo hid
    a cue, or the label matcher offers none of the labels the request names). ``matcher`` (a LabelMatcher with
    the text encoder) and ``config`` narrow the labels exactly as inference does; without them every scene label
    is offered."""
    from lang3d_ros.llm.config import LLMConfig
    from lang3d_ros.llm.constrained import OTHER, Vocabulary, adapter_prompt, compact_model_json, dumps
    from lang3d_ros.llm.request import request_from_dict

    text = sample["instruction"]
    if matcher is not None:
        vocab = Vocabulary.from_query(text, sample["objects"], matcher, config or LLMConfig())
    else:
        vocab = Vocabulary.cues(text, sample["objects"])
    req = request_from_dict(sample["request"])
    from lang3d_ros.llm.understand import request_labels

    if any(l not in vocab.labels and l != OTHER for l in request_labels(req)):
        return None
    compact = compact_model_json(req, vocab)
    if compact is None:
        return None
    return {**sample, "prompt": adapter_prompt(text, vocab.labels), "response": dumps(compact)}


def frozen_texts(folder) -> set[str]:
    """The frozen phrasing set's query texts, normalised (lower case, words only): what training must never
    contain. Empty when the folder is absent (an installed package without its tests)."""
    import os

    from lang3d_ros.llm.frontend import words_of

    path = os.path.join(folder, "phrasings.jsonl")
    if not os.path.isfile(path):
        return set()
    with open(path, encoding="utf-8") as f:
        return {" ".join(words_of(json.loads(line)["text"])) for line in f if line.strip()}


def assert_disjoint_from_frozen(samples: Sequence[dict], folder) -> int:
    """AssertionError when a sample's instruction is a query of the frozen set (compared normalised) or a sample
    comes from one of its scenes; returns how many frozen queries were checked against."""
    import os

    from lang3d_ros.llm.frontend import words_of

    frozen = frozen_texts(folder)
    scenes_path = os.path.join(folder, "scenes.json")
    seeds: set[int] = set()
    if os.path.isfile(scenes_path):
        with open(scenes_path, encoding="utf-8") as f:
            seeds = {int(v["seed"]) for v in json.load(f)["scenes"].values()}
    for s in samples:
        assert " ".join(words_of(s["instruction"])) not in frozen, f"frozen phrasing in training: {s['instruction']!r}"
        sid = str(s.get("scene_id", ""))
        assert not (sid[1:].isdigit() and int(sid[1:]) in seeds), f"frozen scene {sid} in training"
    return len(frozen)


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
