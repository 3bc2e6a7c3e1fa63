"""SayCan-style closed-set scoring: the model ranks candidate requests instead of writing one.

Each candidate is written in the exact JSON the grammar would make the model write (``constrained.dumps``)
and scored as the continuation of the same prompt: the mean log-probability of its tokens. All candidates go
through the model in one batch (right-padded, the prompt shared). The score says which candidate the model
finds the most likely reading; it is not a probability that any of them is right.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

from lang3d_ros.llm.backends import LLMUnavailable
from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.llm.constrained import OTHER, dumps, request_to_model_json
from lang3d_ros.llm.request import Request


def _with_other(req: Request) -> dict:
    """The candidate whose target label is "other" (the query names none of the offered labels)."""
    d = request_to_model_json(replace(req, target=replace(req.target, label="x")) if req.target is not None else req)
    if "target" in d:
        d["target"]["label"] = OTHER
    return d


def score_continuations(backend, messages: list[dict], continuations: Sequence[str], timeout_s: float) -> list[float]:
    """Mean log-probability of each continuation's tokens after the chat prompt (one batched forward pass)."""
    import torch

    if not continuations:
        return []
    tok, model = backend.tokenizer, backend.model
    t0 = time.perf_counter()
    with backend._lock, torch.no_grad():
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)[
            "input_ids"
        ][0].tolist()
        conts = [tok(c, add_special_tokens=False)["input_ids"] for c in continuations]
        length = len(prompt) + max(len(c) for c in conts)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        ids = torch.full((len(conts), length), pad, dtype=torch.long)
        att = torch.zeros((len(conts), length), dtype=torch.long)
        for r, c in enumerate(conts):
            row = prompt + c
            ids[r, : len(row)] = torch.tensor(row)
            att[r, : len(row)] = 1
        logits = model(input_ids=ids.to(model.device), attention_mask=att.to(model.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, L-1, V): position t predicts token t+1
        out = []
        for r, c in enumerate(conts):
            pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(c))
            tgt = torch.tensor(c)
            out.append(float(logp[r, pos, tgt].mean()))
    if time.perf_counter() - t0 > timeout_s:
        raise LLMUnavailable(f"ranking took {time.perf_counter() - t0:.1f} s (limit {timeout_s} s)")
    return out


def label_prompt(query: str, noun: str, labels: Sequence[str]) -> list[dict]:
    """The closed-set question for one open noun: which of the room's objects does it mean."""
    return [
        {"role": "system", "content": "You answer with the name of one object in the room."},
        {
            "role": "user",
            "content": f"Objects in the room: {', '.join(sorted(set(labels)))}.\n"
            f'Someone said: "{query}"\nWhich object do they mean by "{noun}"?',
        },
    ]


def rank_labels(
    backend,
    query: str,
    noun: str,
    options: Sequence[str],
    labels: Sequence[str],
    timeout_s: float,
    include_other: bool = True,
) -> list[float]:
    """Mean log-probability of each option (and of "none of them" at the end when ``include_other``) as the
    model's answer to ``label_prompt``."""
    texts = [f"The {o}." for o in options] + (["None of them."] if include_other else [])
    return score_continuations(backend, label_prompt(query, noun, labels), texts, timeout_s)


def rank_requests(
    backend,
    query: str,
    candidates: Sequence[Request],
    labels: Sequence[str],
    config: LLMConfig,
    include_other: bool = False,
) -> list[float]:
    """Scores (higher = more likely) of each candidate's JSON after the few-shot prompt, plus one for the
    candidate whose target is "other" at the end when ``include_other``. Backends without token
    log-probabilities (HTTP servers) raise LLMUnavailable."""
    from lang3d_ros.llm.prompting import build_messages

    if not (hasattr(backend, "model") and hasattr(backend, "tokenizer")):
        raise LLMUnavailable(f"backend {getattr(backend, 'name', '?')} gives no token log-probabilities to rank with")
    texts = [dumps(request_to_model_json(c)) for c in candidates]
    if include_other and candidates and candidates[0].target is not None:
        texts.append(dumps(_with_other(candidates[0])))
    return score_continuations(backend, build_messages(query, labels, config.few_shot), texts, config.timeout_s)
