"""The trained request adapter: its data (compact grammar, never the frozen set), the shipped files (checksums,
size, tampering refused, missing tolerated), the routing it switches on, and the real model answering with it."""

from __future__ import annotations

import json
import logging
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from lang3d_ros.llm import LLMConfig, LocationGrid, Reasoner
from lang3d_ros.llm.backends import BUILTIN_ADAPTER, attach_adapter
from lang3d_ros.llm.constrained import Vocabulary, _valid, dumps, model_json_to_request, request_schema
from lang3d_ros.llm.datagen import adapter_sample, assert_disjoint_from_frozen, frozen_texts, request_samples
from lang3d_ros.llm.finetune import MANIFEST, verify_adapter
from lang3d_ros.llm.frontend import words_of
from lang3d_ros.llm.request import request_from_dict
from lang3d_ros.llm.scenes import objects_from_ground_truth

synthetic = pytest.importorskip("lang3d_ros.datasets.synthetic")
FROZEN = Path(__file__).parent / "data" / "phrasings"


def _samples(seed: int, per_template: int = 2) -> list[dict]:
    objs = objects_from_ground_truth(synthetic.generate_scene(seed, 14))
    grid = LocationGrid.around_boxes([o.box for o in objs], bins=64)
    return request_samples(objs, grid, np.random.default_rng(seed), f"s{seed}", per_template=per_template)


def test_adapter_samples_are_what_the_compact_grammar_lets_the_model_write():
    samples = _samples(5100)
    adapted = [a for a in map(adapter_sample, samples) if a is not None]
    assert len(adapted) >= 0.8 * len(samples)
    assert {a["template"] for a in adapted} >= {"plain", "count", "where", "on", "absent", "between", "size"}
    for a in adapted:
        obj = json.loads(a["response"])
        vocab = Vocabulary.cues(a["instruction"], a["objects"])
        assert _valid(obj, request_schema(vocab, compact=True)), a
        assert dumps(obj) == a["response"]  # the exact text the grammar forces (separators, key order)
        if "other" not in a["labels"]:
            assert model_json_to_request(obj).to_dict() == request_from_dict(a["request"]).to_dict(), a
        assert a["prompt"].startswith("objects: ") and a["prompt"].endswith("\njson:")
        assert "<loc_" not in a["prompt"]  # the short prompt: labels and the sentence only
    # a relation the query cues must be used: the compact grammar has no "none" for it
    schema = request_schema(Vocabulary.cues("the mug on the table", ["mug", "table"]), compact=True)
    target = schema["properties"]["target"]
    assert target["properties"]["relation"]["enum"] == ["on"] and target["properties"]["anchors"]["minItems"] == 1
    assert "size" not in target["properties"] and "attribute" not in schema["properties"]


def test_training_data_can_never_hold_the_frozen_phrasing_set():
    frozen = [json.loads(x) for x in (FROZEN / "phrasings.jsonl").read_text().splitlines() if x.strip()]
    texts = frozen_texts(FROZEN)
    assert len(texts) >= 150 and " ".join(words_of(frozen[0]["text"])) in texts
    kept = [s for s in _samples(5101, 1) if " ".join(words_of(s["instruction"])) not in texts]
    assert assert_disjoint_from_frozen(kept, FROZEN) == len(texts)
    with pytest.raises(AssertionError, match="frozen phrasing"):
        assert_disjoint_from_frozen([{"instruction": frozen[0]["text"].upper() + "!", "scene_id": "s5101"}], FROZEN)
    seed = json.loads((FROZEN / "scenes.json").read_text())["scenes"][frozen[0]["scene"]]["seed"]
    with pytest.raises(AssertionError, match="frozen scene"):
        assert_disjoint_from_frozen([{"instruction": "find the mug", "scene_id": f"s{seed}"}], FROZEN)


def test_shipped_adapter_is_small_verified_and_trained_away_from_the_frozen_set():
    manifest = verify_adapter(BUILTIN_ADAPTER)
    for key in ("data_seed", "commit", "scene_seeds", "held_out_loss", "split_sizes", "train_s", "files"):
        assert key in manifest, key
    config = json.loads((Path(BUILTIN_ADAPTER) / "adapter_config.json").read_text())
    assert not config.get("modules_to_save")  # LoRA only: no copied embeddings or head
    size = sum(f.stat().st_size for f in Path(BUILTIN_ADAPTER).iterdir())
    assert size < 5_000_000, size
    frozen_seeds = {v["seed"] for v in json.loads((FROZEN / "scenes.json").read_text())["scenes"].values()}
    assert not frozen_seeds & set(manifest["scene_seeds"])


def test_tampered_or_missing_adapter_is_refused_and_the_parser_writes_requests(tmp_path, caplog):
    bad = tmp_path / "tampered"
    shutil.copytree(BUILTIN_ADAPTER, bad)
    weights = bad / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit in the weights
    weights.write_bytes(bytes(raw))
    backend = types.SimpleNamespace(model=object(), adapter=None)
    with caplog.at_level(logging.WARNING, logger="lang3d_ros.llm.backends"):
        assert attach_adapter(backend, str(bad)) is False
        assert attach_adapter(backend, str(tmp_path / "stripped")) is False
    assert backend.adapter is None
    assert "refused" in caplog.text and "checksum" in caplog.text and "no LLM adapter" in caplog.text
    (bad / MANIFEST).unlink()
    with pytest.raises(ValueError, match="manifest"):
        verify_adapter(bad)


class _Scripted:
    """A model that always answers the same request; ``adapter`` as a loaded one would set it."""

    name = "scripted"

    def __init__(self, text: str, adapter: dict | None):
        self.text, self.adapter, self.prompts = text, adapter, []

    def generate(self, messages, max_new_tokens, timeout_s, stop=None, response_format=None):
        self.prompts.append(messages)
        return self.text


def test_mode_auto_lets_only_a_trained_model_write_requests():
    objs = objects_from_ground_truth(synthetic.generate_scene(5102, 14))
    label = sorted({o.label for o in objs})[0]
    text = dumps({"intent": "count", "target": {"label": label}})
    trained = _Scripted(text, {"format": "compact-request-v1"})
    u = Reasoner(LLMConfig(mode="auto"), backend=trained).understand(f"how many {label}s are there", objs)
    assert u.answered_by == "llm" and u.request.to_dict() == {"intent": "count", "target": {"label": label}}
    assert isinstance(trained.prompts[0], str) and trained.prompts[0].startswith("objects: ")
    plain = _Scripted(text, None)  # no adapter: the parser reads it (rank mode), the model is not asked to write
    u = Reasoner(LLMConfig(mode="auto"), backend=plain).understand(f"how many {label}s are there", objs)
    assert u.answered_by == "parser" and plain.prompts == []


@pytest.mark.slow
def test_builtin_model_with_the_adapter_writes_requests_for_unseen_sentences():
    """Fresh scene and sentences (seed 9400, not a training or frozen seed): the adapter loads by default and the
    model's requests pass the checks and equal the generated ones for most of them."""
    from lang3d_ros.llm.backends import load_smollm2
    from lang3d_ros.semantics.encoders import MiniLMTextEncoder

    backend = load_smollm2(LLMConfig())
    assert backend.adapter and backend.adapter["format"] == "compact-request-v1"
    objs = objects_from_ground_truth(synthetic.generate_scene(9400, 14))
    samples = [s for s in _samples(9400, 1) if "other" not in s["labels"]][:16]
    r = Reasoner(LLMConfig(mode="auto"), backend=backend, encoder=MiniLMTextEncoder(device="cpu"))
    by_model = right = 0
    for s in samples:
        u = r.understand(s["instruction"], objs)
        by_model += u.answered_by == "llm"
        right += u.answered_by == "llm" and u.request.to_dict() == request_from_dict(s["request"]).to_dict()
    assert by_model >= 0.75 * len(samples) and right >= 0.6 * len(samples), (by_model, right, len(samples))
