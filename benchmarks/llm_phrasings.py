#!/usr/bin/env python3
"""The frozen phrasing set (test/data/phrasings): parser-only, model-only and model+parser accuracy.

Modes:
- parser: front end + parser + label matcher (text encoder), no model (LLMConfig.mode="parser_only");
- model: the model writes every request under the per-request JSON-schema grammar (mode "llm_first"); a query
  counts as answered by the model only when its request passed the checks (otherwise the parser answered and
  the query counts as not answered, whatever the parser's answer);
- rank: model + parser (mode "rank", the default without an adapter): parser candidates, the model ranks open
  labels SayCan-style and writes the request when the parser cannot read the sentence;
- auto: the default config (llm_first with the shipped adapter, rank without it).
The model is the built-in SmolLM2 with the shipped request adapter (``--adapter ''`` for the plain model).
Answers are computed on the scenes' ground-truth objects (see lang3d_ros.llm.evaluate). Prints a Markdown table
and the failures; latency is per query (understanding + answer), p50 over the model-answered queries.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lang3d_ros.llm import LLMConfig, Reasoner, constrained
from lang3d_ros.llm.evaluate import evaluate, load_phrasing_set, summary

SET = Path(__file__).resolve().parents[1] / "test" / "data" / "phrasings"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--modes", default="parser,model", help="comma-separated: parser, rank, model, auto (the default config)"
    )
    ap.add_argument("--every", type=int, default=1, help="model mode: every k-th query only (it is slow)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core VM)")
    ap.add_argument("--no-encoder", action="store_true", help="no text encoder: synonyms by the table only")
    ap.add_argument(
        "--adapter", default="builtin", help="llm.adapter: builtin (the shipped LoRA), a folder, or '' (plain model)"
    )
    ap.add_argument("--failures", action="store_true", help="print every wrong answer")
    ap.add_argument(
        "--timeout-s",
        type=float,
        default=120.0,
        help="per model call; generous so that a loaded machine measures accuracy, not timeouts",
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pset = load_phrasing_set(SET)
    encoder = None
    if not a.no_encoder:
        from lang3d_ros.semantics.encoders import MiniLMTextEncoder

        encoder = MiniLMTextEncoder(device="cpu")
    backend = None
    rows = []
    for mode in a.modes.split(","):
        if mode != "parser" and backend is None:
            from lang3d_ros.llm.backends import load_smollm2

            t0 = time.perf_counter()
            backend = load_smollm2(LLMConfig(adapter=a.adapter))
            print(
                f"SmolLM2-135M-Instruct loaded in {time.perf_counter() - t0:.1f} s, adapter "
                f"{'loaded' if backend.adapter else 'none'}"
            )
        cfg = LLMConfig(
            mode={"parser": "parser_only", "rank": "rank", "model": "llm_first", "auto": "auto"}[mode],
            timeout_s=a.timeout_s,
        )
        reasoner = Reasoner(cfg, backend=None if mode == "parser" else backend, encoder=encoder)
        queries = pset.queries[:: a.every] if mode == "model" else pset.queries
        constrained.decode_log = []
        t0 = time.perf_counter()
        out = evaluate(pset, reasoner, queries)
        log = constrained.decode_log
        if log:
            print(
                f"[{mode}] constrained decodes: {len(log)}, valid JSON under the schema "
                f"{sum(d['valid_json'] for d in log)}/{len(log)}, consistent requests "
                f"{sum(d['consistent'] for d in log)}/{len(log)}, model tokens p50 "
                f"{sorted(d['model_tokens'] for d in log)[len(log) // 2]}, decode s p50 "
                f"{sorted(d['seconds'] for d in log)[len(log) // 2]:.2f}"
            )
        s = summary(out)
        by_model = sum(o.answered_by == "llm" for o in out)
        model_right = sum(o.correct and o.answered_by == "llm" for o in out)
        rows.append((mode, s, by_model, model_right, time.perf_counter() - t0))
        if a.failures:
            for o in out:
                if not o.correct:
                    print(
                        f"  [{mode}] {o.query.id} {o.query.kind:11s} {o.query.text!r} ({o.answered_by}): "
                        f"{o.detail[:160]}"
                    )
    print(
        "\n| mode | queries | correct | answered by the model | correct and by the model | p50 s (model-answered) "
        "| p50 s (all) |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode, s, by_model, model_right, wall in rows:
        p50m = f"{s['model_p50_s']:.2f}" if s["model_p50_s"] is not None else "-"
        print(
            f"| {mode} | {s['n']} | {s['accuracy'] * 100:.1f}% ({round(s['accuracy'] * s['n'])}) | "
            f"{by_model} ({by_model / s['n'] * 100:.0f}%) | {model_right} | {p50m} | {s['p50_s']:.3f} |"
        )
    for mode, s, *_ in rows:
        kinds = ", ".join(f"{k} {c}/{n}" for k, (c, n) in s["per_kind"].items())
        print(f"\n{mode}: {kinds}; answered_by {s['answered_by']}")


if __name__ == "__main__":
    main()
