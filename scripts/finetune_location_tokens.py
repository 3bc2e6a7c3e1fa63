#!/usr/bin/env python3
"""Teach a causal LM the 3D-LLM location tokens with LoRA on a JSONL of generated samples.

Example (GPU machine):
  python scripts/finetune_location_tokens.py --data samples.jsonl --model smollm2 --out runs/loc --device cuda
"""

from __future__ import annotations

import argparse
import logging

from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.llm.datagen import read_jsonl
from lang3d_ros.llm.finetune import FinetuneConfig, finetune_location_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="JSONL from lang3d_ros.llm.datagen")
    ap.add_argument("--model", default="smollm2", help="'smollm2' (built-in) or a local transformers folder")
    ap.add_argument("--out", required=True, help="folder for the adapter and tokenizer")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--loc-bins", type=int, default=256)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if a.model == "smollm2":
        from lang3d_ros.llm.backends import load_smollm2

        b = load_smollm2(LLMConfig())
        model, tok = b.model, b.tokenizer
    else:
        tok = AutoTokenizer.from_pretrained(a.model)
        model = AutoModelForCausalLM.from_pretrained(a.model)
    cfg = FinetuneConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        learning_rate=a.lr,
        lora_r=a.lora_r,
        loc_bins=a.loc_bins,
        device=a.device,
    )
    pm, losses = finetune_location_tokens(model.train(), tok, read_jsonl(a.data), cfg)
    pm.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; saved to {a.out}")


if __name__ == "__main__":
    main()
