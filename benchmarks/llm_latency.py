#!/usr/bin/env python3
"""Latency of a model-written request, side by side: the plain SmolLM2 with per-query few-shot examples and the
full grammar (the path before the adapter) vs the shipped adapter's short prompt and compact grammar.

Sentences are generated (``datagen.request_samples``) on fresh scenes (``--seeds``, not training or frozen ones)
and alternate between the two set-ups so that machine load hits both alike. Per query: understanding time
(``Reasoner.understand`` in llm_first mode: narrowing, prompt, prefill, constrained decode, the check), prompt
tokens and the tokens the model chose. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lang3d_ros.llm import LLMConfig, LocationGrid, Reasoner, constrained
from lang3d_ros.llm.backends import load_smollm2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[9501, 9502])
    ap.add_argument("--queries", type=int, default=24, help="sentences per set-up")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from lang3d_ros.datasets.synthetic import generate_scene
    from lang3d_ros.llm.datagen import request_samples
    from lang3d_ros.llm.scenes import objects_from_ground_truth
    from lang3d_ros.semantics.encoders import MiniLMTextEncoder

    work = []
    for seed in a.seeds:
        objs = objects_from_ground_truth(generate_scene(seed, 14))
        grid = LocationGrid.around_boxes([o.box for o in objs], bins=64)
        for s in request_samples(objs, grid, np.random.default_rng(seed), f"s{seed}", per_template=1):
            if "other" not in s["labels"]:
                work.append((s["instruction"], objs))
    work = work[: a.queries]
    encoder = MiniLMTextEncoder(device="cpu")
    setups = {
        "plain model, 4 few-shot examples, full grammar": load_smollm2(LLMConfig(adapter="")),
        "adapter, short prompt, compact grammar": load_smollm2(LLMConfig()),
    }
    reasoners = {k: Reasoner(LLMConfig(mode="llm_first"), backend=b, encoder=encoder) for k, b in setups.items()}
    for r in reasoners.values():  # warm-up: first forward, grammar tokenizer, encoder
        r.understand(work[0][0], work[0][1])
    stats: dict[str, dict[str, list]] = {k: {"s": [], "prompt": [], "chosen": [], "llm": []} for k in setups}
    for text, objs in work:
        for name, r in reasoners.items():
            constrained.decode_log = []
            t0 = time.perf_counter()
            try:
                u = r.understand(text, objs)
                by = str(u.answered_by)
            except Exception:  # NOT_FOUND and the like still count for latency
                by = "error"
            stats[name]["s"].append(time.perf_counter() - t0)
            stats[name]["llm"].append(by == "llm")
            log = constrained.decode_log or [{}]
            stats[name]["chosen"].append(log[0].get("model_tokens", 0))
            stats[name]["prompt"].append(log[0].get("prompt_tokens", 0))
    print("| set-up | queries | p50 s (all) | p50 s (model-answered) | p90 s | prompt tokens p50 | chosen tokens p50 |")
    print("|---|---|---|---|---|---|---|")
    for name, st in stats.items():
        llm_s = [s for s, ok in zip(st["s"], st["llm"]) if ok]
        p90 = sorted(st["s"])[int(0.9 * (len(st["s"]) - 1))]
        print(
            f"| {name} | {len(st['s'])} | {statistics.median(st['s']):.2f} | "
            f"{statistics.median(llm_s) if llm_s else float('nan'):.2f} ({len(llm_s)}) | {p90:.2f} | "
            f"{statistics.median(st['prompt']):.0f} | {statistics.median(st['chosen']):.0f} |"
        )


if __name__ == "__main__":
    main()
