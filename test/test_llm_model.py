"""3D-LLM with real models: built-in SmolLM2 (loaded once per session), location tokens in a
tokenizer, LoRA fine-tuning of a tiny Llama, samples from synthetic ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lang3d_ros.llm import LLMConfig, LocationGrid, Reasoner, add_location_tokens
from lang3d_ros.llm.backends import load_smollm2
from lang3d_ros.llm.datagen import generate_samples, read_jsonl, write_jsonl
from lang3d_ros.llm.finetune import FinetuneConfig, finetune_location_tokens
from lang3d_ros.llm.resolve import object_color
from lang3d_ros.llm.scenes import objects_from_ground_truth

synthetic = pytest.importorskip("lang3d_ros.datasets.synthetic")


@pytest.fixture(scope="session")
def smollm2():
    """Converted once into the cache (~20 s on a cold CI), ~1 s afterwards."""
    return load_smollm2(LLMConfig(max_new_tokens=32))


@pytest.mark.slow
def test_smollm2_answers_through_the_shared_path(smollm2):
    objs = objects_from_ground_truth(synthetic.generate_scene(0, 12))
    r = Reasoner(LLMConfig(max_new_tokens=32), backend=smollm2)
    a = r.ground("the plant on the table", objs, (0.0, 0.0, 0.0))
    assert a.path in ("llm", "parser")
    gt = [
        o
        for o in objs
        if o.label == "plant"
        and any(s.label == "table" and abs(o.box.min_xyz[2] - s.box.max_xyz[2]) < 0.02 for s in objs)
    ]
    assert a.objects and a.objects[0].instance_id == gt[0].instance_id
    text = smollm2.generate([{"role": "user", "content": "print 1000 words"}], max_new_tokens=500, timeout_s=30)
    assert len(smollm2.tokenizer(text)["input_ids"]) <= 32 + 2  # capped by the config, not by the caller


@pytest.mark.slow
def test_location_tokens_added_and_embeddings_resized(smollm2):
    tok = smollm2.tokenizer
    n0 = len(tok)
    added = add_location_tokens(tok, None, bins=256)
    assert added in (0, 256) and len(tok) == n0 + added
    ids = tok("<loc_0><loc_17><loc_255>", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and tok.decode(ids) == "<loc_0><loc_17><loc_255>"
    assert add_location_tokens(tok, None, bins=256) == 0


def test_counts_and_colours_match_ground_truth():
    r = Reasoner(LLMConfig(mode="parser_only"))
    for seed in range(4):
        scene = synthetic.generate_scene(seed, 12)
        objs = objects_from_ground_truth(scene)
        for label in sorted({o.label for o in scene.objects}):
            n = sum(o.label == label for o in scene.objects)
            a = r.ask(f"how many {label}s are there?", objs, (0, 0, 0))
            assert f" {n} " in a.text and len(a.objects) == n, a.text
        for o, g in zip(objs, scene.objects):
            assert object_color(o) == g.color_name
            if sum(x.label == g.label for x in scene.objects) == 1:
                assert r.ask(f"what colour is the {g.label}?", objs, (0, 0, 0)).text.endswith(f"is {g.color_name}.")


@pytest.mark.slow
def test_samples_jsonl_and_lora_finetune_lowers_loss(smollm2, tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    objs = objects_from_ground_truth(synthetic.generate_scene(1, 10))
    grid = LocationGrid.around_boxes([o.box for o in objs], bins=64)
    samples = generate_samples(objs, grid, np.random.default_rng(0), max_per_task=5)
    assert {s["task"] for s in samples} == {"grounding", "qa", "caption", "navigation"}
    g = [s for s in samples if s["task"] == "grounding"][0]
    box = grid.tokens_to_box(g["response"])
    assert any(np.all(np.abs(box.min_xyz - o.box.min_xyz) <= grid.voxel_m) for o in objs)
    f = tmp_path / "s.jsonl"
    assert write_jsonl(samples, f) == len(samples) and read_jsonl(f) == samples
    smollm2.tokenizer.save_pretrained(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
        )
    )
    short = [{"instruction": s["instruction"], "response": s["response"]} for s in samples]
    _, losses = finetune_location_tokens(
        model, tok, short, FinetuneConfig(steps=30, batch_size=4, learning_rate=1e-2, loc_bins=64, max_len=64)
    )
    assert len(tok) >= 64 and model.get_input_embeddings().weight.shape[0] == len(tok)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_adapter_manifest_checksums_refuse_a_tampered_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from lang3d_ros.llm.finetune import MANIFEST, load_adapter, save_adapter, verify_adapter

    def tiny():
        torch.manual_seed(0)
        return LlamaForCausalLM(
            LlamaConfig(
                vocab_size=64,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
            )
        )

    pm = get_peft_model(tiny(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    manifest = save_adapter(pm, None, tmp_path / "ok", {"data_seed": 7, "steps": 0})
    assert verify_adapter(tmp_path / "ok")["data_seed"] == 7 and "adapter_model.safetensors" in manifest["files"]
    assert load_adapter(tiny(), tmp_path / "ok") is not None
    weights = tmp_path / "ok" / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte in the weights
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        load_adapter(tiny(), tmp_path / "ok")
    (tmp_path / "ok" / MANIFEST).unlink()
    with pytest.raises(ValueError, match="manifest"):
        verify_adapter(tmp_path / "ok")


def test_request_samples_and_splits_hold_out_what_they_say():
    from lang3d_ros.llm.constrained import model_json_to_request
    from lang3d_ros.llm.datagen import TEMPLATES, request_samples, split_samples

    rng = np.random.default_rng(0)
    samples = []
    for seed in (5000, 5001, 5002):
        objs = objects_from_ground_truth(synthetic.generate_scene(seed, 12))
        samples += request_samples(objs, LocationGrid.around_boxes([o.box for o in objs], bins=64), rng, f"s{seed}")
    assert {s["template"] for s in samples} <= set(TEMPLATES) and len({s["template"] for s in samples}) >= 10
    for s in samples:  # every response is a request the grammar could write, and the scene carries location tokens
        model_json_to_request(json.loads(s["response"]))
        assert "<loc_" in s["scene"]
    assert any(s["instruction"] == s["instruction"].lower() and "?" not in s["instruction"] for s in samples)
    sp = split_samples(
        samples,
        rng,
        held_templates=("near",),
        held_combos=(("on", "red"),),
        held_labels=("vase",),
        held_scenes=("s5002",),
    )
    assert sum(len(v) for v in sp.values()) == len(samples)
    assert all(s["template"] == "near" for s in sp["test_template"])
    train = sp["train"]
    assert train and not any(
        s["template"] == "near"
        or (s["relation"], s["attribute"]) == ("on", "red")
        or "vase" in s["labels"]
        or s["scene_id"] == "s5002"
        for s in train
    )
