"""LoRA fine-tuning that teaches a causal LM the location tokens on generated samples.

LoRA adapters on the attention projections plus full training of the (resized) input/output
embeddings, so the new ``<loc_i>`` rows learn. Loss is on the response tokens only. A plain loop
(AdamW, fixed batch order from a seed); it does no evaluation, no gradient accumulation and no
mixed precision.
"""
from __future__ import annotations

import logging
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
    p = p[-(max_len - len(r)):]
    return p + r, [-100] * len(p) + r


def finetune_location_tokens(model, tokenizer, samples: Sequence[dict], config: FinetuneConfig):
    """Train in place; returns (peft_model, losses per step)."""
    from peft import LoraConfig, get_peft_model

    config.validate()
    if not samples:
        raise ValueError("no training samples")
    add_location_tokens(tokenizer, model, config.loc_bins)
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                          config.device if config.device != "auto" else "cpu")
    lcfg = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      modules_to_save=["embed_tokens", "lm_head"], task_type="CAUSAL_LM")
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
