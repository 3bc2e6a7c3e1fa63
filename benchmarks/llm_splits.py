#!/usr/bin/env python3
"""The adapter's held-out data splits: parser-only, model-only and model+parser, request by request.

The splits are regenerated from the shipped adapter's manifest (scene seeds, samples per template, data seed:
``finetune.adapter_data``): held-out template, relation x attribute combinations, label, scene. A query is right
when its Request equals the generated one (labels bound to the scene's labels), or, for a sentence naming
nothing in the scene (label "other"), when the answer is NOT_FOUND. Modes:
- parser: ``LLMConfig.mode="parser_only"``;
- model: the model writes the request (``llm_first``); a query counts only when the model's request passed the
  checks (otherwise the parser answered it and it counts as not answered);
- model+parser: ``llm_first`` as served (the parser answers what the model's request fails).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.llm import LLMConfig, Reasoner
from lang3d_ros.llm.backends import BUILTIN_ADAPTER, load_smollm2
from lang3d_ros.llm.finetune import adapter_data
from lang3d_ros.llm.request import request_from_dict


def judge(reasoner: Reasoner, sample: dict, objects) -> tuple[bool, str]:
    """(right, answered_by) for one generated sample."""
    gold = request_from_dict(sample["request"])
    absent = "other" in sample["labels"]
    try:
        u = reasoner.understand(sample["instruction"], objects)
    except Lang3DError as exc:
        return absent and exc.code == ErrorCode.NOT_FOUND, "parser"
    except ValueError:
        return False, "parser"
    return (not absent and u.request.to_dict() == gold.to_dict()), str(u.answered_by)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", default=BUILTIN_ADAPTER)
    ap.add_argument("--per-split", type=int, default=40, help="first N samples of each held-out split")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(f"{a.adapter}/lang3d_adapter.json", encoding="utf-8") as f:
        man = json.load(f)
    seeds = man["scene_seeds"]
    splits, _ = adapter_data(len(seeds), seeds[0], man["per_template"], man["data_seed"], frozen_folder=None)
    from lang3d_ros.datasets.synthetic import generate_scene
    from lang3d_ros.llm.scenes import objects_from_ground_truth
    from lang3d_ros.semantics.encoders import MiniLMTextEncoder

    encoder = MiniLMTextEncoder(device="cpu")
    backend = load_smollm2(LLMConfig(adapter=a.adapter))
    if not backend.adapter:
        raise SystemExit(f"adapter {a.adapter} not loaded")
    parser = Reasoner(LLMConfig(mode="parser_only"), encoder=encoder)
    model = Reasoner(LLMConfig(mode="llm_first"), backend=backend, encoder=encoder)
    scenes: dict[str, list] = {}
    print("| split | n | parser | model alone (answered / right) | model + parser | p50 s, model |")
    print("|---|---|---|---|---|---|")
    for name in ("test_template", "test_combo", "test_label", "test_scene"):
        rows = splits[name][: a.per_split]
        p_ok = m_ok = m_by = mp_ok = 0
        times = []
        for s in rows:
            sid = s["scene_id"]
            if sid not in scenes:
                scenes[sid] = objects_from_ground_truth(generate_scene(int(sid[1:]), 14))
            objs = scenes[sid]
            p_ok += judge(parser, s, objs)[0]
            t0 = time.perf_counter()
            ok, by = judge(model, s, objs)
            times.append(time.perf_counter() - t0)
            mp_ok += ok
            m_by += by == "llm"
            m_ok += ok and by == "llm"
        n = max(len(rows), 1)
        p50 = sorted(times)[len(times) // 2] if times else float("nan")
        print(
            f"| {name} | {len(rows)} | {100 * p_ok / n:.1f}% | {100 * m_by / n:.0f}% / {100 * m_ok / n:.1f}% | "
            f"{100 * mp_ok / n:.1f}% | {p50:.2f} |"
        )


if __name__ == "__main__":
    main()
