"""LoRA fine-tuning that teaches a causal LM the location tokens on generated samples.

LoRA adapters on the attention projections plus full training of the (resized) input/output
embeddings, so the new ``<loc_i>`` rows learn. Loss is on the response tokens only. A plain loop
(AdamW, fixed batch order from a seed); it does no evaluation, no gradient accumulation and no
mixed precision.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from lang3d_ros.llm.location import add_location_tokens

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    steps: int = 200
    batch_size: int = 4
    learning_rate: float = 1e-3
    lora_r: int = 8
    lora_alpha: int = 16
    max_len: int = 512
    loc_bins: int = 256
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or self.learning_rate <= 0 or self.lora_r <= 0 or self.max_len < 8:
            raise ValueError("steps, batch_size, learning_rate, lora_r must be positive and max_len >= 8")


def encode_sample(tokenizer, sample: dict, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with prompt tokens masked (-100); the prompt is truncated from the left."""
    prompt = f"{sample.get('scene', '')}\n{sample['instruction']}\n"
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(sample["response"], add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    r = (r + eos)[: max_len // 2]
    p = p[-(max_len - len(r)) :]
    return p + r, [-100] * len(p) + r


def finetune_location_tokens(model, tokenizer, samples: Sequence[dict], config: FinetuneConfig):
    """Train in place; returns (peft_model, losses per step)."""
    from peft import LoraConfig, get_peft_model

    config.validate()
    if not samples:
        raise ValueError("no training samples")
    add_location_tokens(tokenizer, model, config.loc_bins)
    device = torch.device(
        "cuda"
        if config.device == "auto" and torch.cuda.is_available()
        else config.device
        if config.device != "auto"
        else "cpu"
    )
    lcfg = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        modules_to_save=["embed_tokens", "lm_head"],
        task_type="CAUSAL_LM",
    )
    pm = get_peft_model(model, lcfg).to(device)
    pm.train()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=config.learning_rate)
    enc = [encode_sample(tokenizer, s, config.max_len) for s in samples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    g = torch.Generator().manual_seed(config.seed)
    losses = []
    for step in range(config.steps):
        idx = torch.randint(len(enc), (min(config.batch_size, len(enc)),), generator=g).tolist()
        L = max(len(enc[i][0]) for i in idx)
        ids = torch.full((len(idx), L), pad, dtype=torch.long)
        lab = torch.full((len(idx), L), -100, dtype=torch.long)
        att = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):
            x, y = enc[i]
            ids[r, : len(x)], lab[r, : len(y)], att[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        out = pm(input_ids=ids.to(device), attention_mask=att.to(device), labels=lab.to(device))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
        if step % 20 == 0:
            log.info("step %d loss %.4f", step, losses[-1])
    return pm, losses


# --------------------------------------------------------------------------------------------------------------
# The request model: LoRA on (scene + instruction -> request JSON) from ``datagen.request_samples``, saved with a
# manifest (data seed, scenes, commit, metrics) and the SHA-256 of every file; ``load_adapter`` refuses a folder
# whose files do not match. Run: python -m lang3d_ros.llm.finetune --out runs/requests (see main()).
MANIFEST = "lang3d_adapter.json"


def split_loss(model, tokenizer, samples: Sequence[dict], max_len: int, device: str = "cpu") -> float:
    """Mean response-token loss (teacher forced) over ``samples``; NaN when there are none."""
    if not samples:
        return float("nan")
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for s in samples:
            x, y = encode_sample(tokenizer, s, max_len)
            out = model(input_ids=torch.tensor([x], device=device), labels=torch.tensor([y], device=device))
            k = sum(v != -100 for v in y)
            total, n = total + float(out.loss) * k, n + k
    model.train()
    return total / max(n, 1)


def _sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_adapter(peft_model, tokenizer, folder, manifest: dict) -> dict:
    """Adapter (+ tokenizer unless None) into ``folder`` with ``MANIFEST``: ``manifest`` plus ``files``
    {name: sha256}."""
    import json
    import os

    os.makedirs(folder, exist_ok=True)
    peft_model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    files = sorted(f for f in os.listdir(folder) if f != MANIFEST and os.path.isfile(os.path.join(folder, f)))
    manifest = {**manifest, "files": {f: _sha256(os.path.join(folder, f)) for f in files}}
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return manifest


def verify_adapter(folder) -> dict:
    """The manifest of an adapter folder after checking every listed file's SHA-256; ValueError when the
    manifest is missing, a file is missing, or a checksum differs (a tampered or partial adapter)."""
    import json
    import os

    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise ValueError(f"{folder}: no {MANIFEST}; an adapter without its manifest is refused")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    files = manifest.get("files") or {}
    if "adapter_config.json" not in files:
        raise ValueError(f"{folder}: the manifest lists no adapter_config.json")
    for name, digest in files.items():
        p = os.path.join(folder, name)
        if not os.path.isfile(p) or _sha256(p) != digest:
            raise ValueError(f"{folder}: {name} is missing or does not match its checksum; adapter refused")
    return manifest


def load_adapter(model, folder):
    """``model`` with the verified LoRA adapter of ``folder`` (tokenizer resized to it first by the caller)."""
    from peft import PeftModel

    verify_adapter(folder)
    return PeftModel.from_pretrained(model, folder)


def main(argv: list[str] | None = None) -> None:
    """Generate request samples from synthetic scenes, split them, LoRA-train SmolLM2 (or a folder), report the
    held-out losses and save the adapter with its manifest. Sizes: the defaults are the verification run (a few
    steps); a full CPU run needs ~--scenes 60 --steps 1500 (see docs/BENCHMARKS.md)."""
    import argparse
    import logging
    import subprocess

    import numpy as np

    from lang3d_ros.datasets.synthetic import generate_scene
    from lang3d_ros.llm.config import LLMConfig
    from lang3d_ros.llm.datagen import request_samples, split_samples
    from lang3d_ros.llm.location import LocationGrid
    from lang3d_ros.llm.scenes import objects_from_ground_truth

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", required=True, help="adapter folder")
    ap.add_argument("--model", default="smollm2", help="'smollm2' (built-in) or a local transformers folder")
    ap.add_argument("--scenes", type=int, default=4, help="synthetic scenes (seeds --seed0 ...)")
    ap.add_argument("--seed0", type=int, default=5000, help="first scene seed (keep clear of evaluation seeds)")
    ap.add_argument("--per-template", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=384)
    ap.add_argument("--eval-per-split", type=int, default=4, help="held-out samples scored per split")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    rng = np.random.default_rng(a.data_seed)
    samples: list[dict] = []
    seeds = list(range(a.seed0, a.seed0 + a.scenes))
    for seed in seeds:
        objs = objects_from_ground_truth(generate_scene(seed, 12))
        grid = LocationGrid.around_boxes([o.box for o in objs], bins=64)
        samples += request_samples(objs, grid, rng, f"s{seed}", per_template=a.per_template)
    splits = split_samples(samples, rng, held_scenes=(f"s{seeds[-1]}",))
    if a.model == "smollm2":
        from lang3d_ros.llm.backends import load_smollm2

        b = load_smollm2(LLMConfig())
        model, tok = b.model, b.tokenizer
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok, model = AutoTokenizer.from_pretrained(a.model), AutoModelForCausalLM.from_pretrained(a.model)
    cfg = FinetuneConfig(steps=a.steps, batch_size=a.batch_size, max_len=a.max_len, loc_bins=64, device=a.device)
    t0 = time.perf_counter()
    pm, losses = finetune_location_tokens(model.train(), tok, splits["train"], cfg)
    train_s = time.perf_counter() - t0
    metrics = {k: split_loss(pm, tok, v[: a.eval_per_split], a.max_len, a.device) for k, v in splits.items()}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    manifest = save_adapter(
        pm,
        tok,
        a.out,
        {
            "base_model": a.model,
            "data_seed": a.data_seed,
            "scene_seeds": seeds,
            "commit": commit,
            "steps": a.steps,
            "train_samples": len(splits["train"]),
            "split_sizes": {k: len(v) for k, v in splits.items()},
            "loss_first_last": [losses[0], losses[-1]],
            "held_out_loss": metrics,
            "train_s": train_s,
        },
    )
    print(
        f"{len(samples)} samples {manifest['split_sizes']}; loss {losses[0]:.3f} -> {losses[-1]:.3f} in "
        f"{a.steps} steps ({train_s:.0f} s); held-out loss {metrics}; saved {a.out}"
    )


if __name__ == "__main__":
    main()
