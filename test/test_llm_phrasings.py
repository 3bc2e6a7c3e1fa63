"""The language front end on the frozen phrasing set (test/data/phrasings) and the constrained-decoding pieces.

Fast: a third of the set through the parser + label matcher, the set's checksum (it is frozen), the schema and
the front end. Slow (real SmolLM2): grammar-constrained decoding is valid JSON of the schema every time, and the
ranking path answers the queries whose noun only the encoder relates to a map label.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.llm import LLMConfig, Reasoner, check_query, normalize, parse
from lang3d_ros.llm.constrained import (
    OTHER,
    _valid,
    model_json_to_request,
    request_schema,
    request_to_model_json,
)
from lang3d_ros.llm.evaluate import evaluate, load_phrasing_set, summary
from lang3d_ros.llm.request import Intent, Relation, Superlative

SET = Path(__file__).parent / "data" / "phrasings"
FROZEN_SHA256 = {
    "phrasings.jsonl": "b152a0e3af3a4d9b881f088793b6044a091dc315b8521bbaeb07605b47cd3be1",
    "scenes.json": "9adf666f02e57e2a2450baa294e047784fb141d5d7d336d96b11dae4a9c67971",
}


@pytest.fixture(scope="module")
def pset():
    return load_phrasing_set(SET)


@pytest.fixture(scope="module")
def encoder():
    from lang3d_ros.semantics.encoders import MiniLMTextEncoder

    try:
        return MiniLMTextEncoder(device="cpu")
    except Exception as exc:  # the model folder is part of the set-up; a bare clone may lack it
        pytest.skip(f"MiniLM text encoder unavailable: {exc}")


def test_the_phrasing_set_is_frozen(pset):
    for name, digest in FROZEN_SHA256.items():
        assert hashlib.sha256((SET / name).read_bytes()).hexdigest() == digest, f"{name} changed: it is frozen"
    assert len(pset.queries) >= 150 and len({q.id for q in pset.queries}) == len(pset.queries)
    kinds = {q.kind for q in pset.queries}
    assert {"ground", "navigate", "count", "attribute", "relation", "superlative", "where", "not_found"} <= kinds


def test_parser_on_a_third_of_the_set(pset, encoder):
    """Measured on the whole set: 153/157 (docs/BENCHMARKS.md); this subset must stay at >= 90%."""
    sub = pset.queries[::3]
    out = evaluate(pset, Reasoner(LLMConfig(mode="parser_only"), encoder=encoder), sub)
    s = summary(out)
    wrong = [(o.query.text, o.detail) for o in out if not o.correct]
    assert s["accuracy"] >= 0.9, wrong
    assert all(o.answered_by in ("parser", "not_found") for o in out)
    absent = [o for o in out if "not_found" in o.query.expect]
    assert absent and all(o.correct for o in absent)  # absent objects fail cleanly, with NOT_FOUND


def test_synonyms_come_from_the_text_encoder(pset, encoder):
    """Nouns that neither the synonym table nor a head-noun rule relate to a map label ("light" / lamp, "bag" /
    backpack): found through the encoder, NOT_FOUND without it."""
    sub = [q for q in pset.queries if q.id in {"s211-06", "s277-16", "s263-19", "s263-03"}]
    with_encoder = evaluate(pset, Reasoner(LLMConfig(mode="parser_only"), encoder=encoder), sub)
    assert all(o.correct for o in with_encoder), [(o.query.text, o.detail) for o in with_encoder]
    without = evaluate(pset, Reasoner(LLMConfig(mode="parser_only")), sub)
    assert all(o.answered_by == "not_found" and not o.correct for o in without)


@pytest.mark.parametrize(
    "text,words,nav",
    [
        ("Could you please show me the red mug?", "the red mug", False),
        ("hey robot, I need you to go to the couch please", "the couch", True),
        ("I'd like you to head over to the bed", "the bed", True),
        ("where's the cup", "where is the cup", False),
        ("the light please", "the light", False),
        ("find me a guitar", "a guitar", False),
        ("what color's the mug", "what color is the mug", False),
    ],
)
def test_front_end_removes_politeness_and_lead_ins(text, words, nav):
    n = normalize(text)
    assert n.text == words and n.navigation == nav


@pytest.mark.parametrize(
    "text,intent,label",
    [
        ("count the chairs in this room", Intent.COUNT, "chair"),
        ("how many chairs do you see", Intent.COUNT, "chair"),
        ("number of chairs", Intent.COUNT, "chair"),
        ("where did I leave my keys", Intent.WHERE, "key"),
        ("show me everything on the bed", Intent.RELATIONS, ""),
        ("how tall is the lamp", Intent.ATTRIBUTE, "lamp"),
        ("take me to the sofa", Intent.GROUND, "sofa"),
    ],
)
def test_parser_reads_common_question_forms(text, intent, label):
    r = parse(text)
    assert r is not None and r.intent == intent and r.target.label == label, r


def test_one_validator_codes():
    assert check_query("  find   the mug ") == "find the mug"
    for bad in (None, "", " \t", "a" * 2000, "mug\x07", b"\xff"):
        with pytest.raises(Lang3DError) as exc:
            check_query(bad)
        assert exc.value.code == ErrorCode.BAD_REQUEST


def test_schema_restricts_labels_and_caps_nesting():
    s = request_schema(["mug", "table", "mug"])
    t = s["properties"]["target"]["properties"]
    assert t["label"]["enum"] == ["mug", "table", "any", OTHER]
    assert set(t["relation"]["enum"]) == {r.value for r in Relation} | {"none"}
    assert set(t["superlative"]["enum"]) == {x.value for x in Superlative} | {"none"}
    anchor = t["anchors"]["items"]
    assert t["anchors"]["maxItems"] == 2 and "anchors" not in anchor["properties"]  # two levels at most
    assert "task" not in s["properties"]["intent"]["enum"]
    good = {
        "intent": "ground",
        "target": {
            "label": "mug",
            "color": "red",
            "size": "none",
            "relation": "on",
            "superlative": "none",
            "anchors": [{"label": "table", "color": "none"}],
        },
        "attribute": "none",
    }
    assert _valid(good, s)
    assert not _valid({**good, "target": {**good["target"], "label": "lamp"}}, s)  # not a map label
    assert not _valid({**good, "extra": 1}, s)


@pytest.mark.parametrize(
    "text",
    [
        "the red mug on the table",
        "the chair closest to the door",
        "how many chairs",
        "what colour is the sofa",
        "what is on the table",
        "the lamp between the sofa and the bed",
        "where is the green plant",
        "describe the room",
    ],
)
def test_model_json_round_trip(text):
    req = parse(text)
    assert model_json_to_request(request_to_model_json(req)) == req


# ------------------------------------------------------------------------------------------------ real model
@pytest.fixture(scope="module")
def smollm2():
    from lang3d_ros.llm.backends import load_smollm2

    return load_smollm2(LLMConfig(adapter=""))  # the plain model: ranking and few-shot decoding (no adapter)


@pytest.mark.slow
def test_constrained_decoding_is_always_valid(smollm2, pset):
    from lang3d_ros.llm.constrained import generate_request
    from lang3d_ros.llm.understand import request_labels

    rng = np.random.default_rng(3)
    for i in rng.choice(len(pset.queries), 3, replace=False):
        q = pset.queries[int(i)]
        labels = sorted({o.label for o in pset.scenes[q.scene]})
        req = generate_request(smollm2, q.text, labels, LLMConfig(mode="llm_first", few_shot=2, timeout_s=600))
        assert req.intent in list(Intent) and set(request_labels(req)) <= set(labels) | {OTHER}


@pytest.mark.slow
def test_ranking_answers_open_labels(smollm2, pset, encoder):
    """The queries of the set whose noun no rule matches and the encoder relates to a map label only weakly
    (similarity between open_threshold and bind_threshold): the model decides. Measured 3/5 (BENCHMARKS.md);
    the parser alone gets the two absent objects and none of the three present ones."""
    open_ids = {"s211-02", "s211-05", "s251-16", "s211-20", "s263-20"}
    sub = [q for q in pset.queries if q.id in open_ids]
    out = evaluate(pset, Reasoner(LLMConfig(mode="rank"), backend=smollm2, encoder=encoder), sub)
    assert sum(o.answered_by == "llm" for o in out) >= 2
    assert sum(o.correct for o in out) >= 3, [(o.query.text, o.detail) for o in out]
    parser = evaluate(pset, Reasoner(LLMConfig(mode="parser_only"), encoder=encoder), sub)
    assert sum(o.correct for o in parser) == 2


def test_phrasing_queries_are_json(pset):
    for line in (SET / "phrasings.jsonl").read_text().splitlines():
        d = json.loads(line)
        assert set(d) == {"id", "scene", "kind", "text", "expect"}
