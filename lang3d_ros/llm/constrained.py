"""Grammar-constrained decoding: the model writes the request as JSON that a per-request schema admits.

``request_schema`` is built per request: object labels restricted to the map's labels (plus ``"other"`` =
none of them, and ``"any"`` = any object), intents, relations, superlatives, sizes and colours as enums,
phrases nested at most two levels (a target and its anchors), every key required in a fixed order (the model
only chooses values; keys and punctuation are forced). ``Vocabulary.from_query`` narrows the enums further to
the labels some phrase of the query may name and the cues its words contain, so the model chooses the structure
but cannot invent a colour, relation or object. ``generate_request`` decodes with that schema:
through llguidance's token mask for a local transformers model (greedy, KV cache, forced tokens fed without
sampling), or as ``response_format`` ``{"type": "json_schema"}`` for an OpenAI-compatible server (llama.cpp
and vLLM enforce it). Tasks (pick / place steps) are not in the model's schema: the parser writes them.
The grammar makes the output valid; it does not make it right (see ``understand`` for how it is checked).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from lang3d_ros.llm.backends import LLMUnavailable
from lang3d_ros.llm.colors import PALETTE_RGB
from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.llm.request import ATTRIBUTES, RELATIONS, SIZES, SUPERLATIVES, Intent, Request, request_from_dict

NONE = "none"
ANY = "any"
OTHER = "other"
MODEL_INTENTS = tuple(i.value for i in Intent if i != Intent.TASK)
SEPARATORS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Vocabulary:
    """The values a request's enums may take. ``from_query`` narrows them to what a query's words cue."""

    labels: tuple[str, ...]
    colors: tuple[str, ...] = tuple(sorted(PALETTE_RGB))
    sizes: tuple[str, ...] = SIZES
    relations: tuple[str, ...] = RELATIONS
    superlatives: tuple[str, ...] = SUPERLATIVES
    intents: tuple[str, ...] = MODEL_INTENTS

    @classmethod
    def cues(cls, query: str, labels: Sequence[str] = ()) -> "Vocabulary":
        """``labels`` as given; colours, sizes, relations, superlatives and intents narrowed to the query's
        words (what ``from_query`` does without the label matcher)."""
        from lang3d_ros.llm.parser import tokenize
        from lang3d_ros.llm.prompting import _query_cues, cued_intents

        words = tokenize(query)
        rels, sups, cols, sizes = _query_cues(words)
        return cls(
            tuple(sorted(set(labels))),
            tuple(sorted(cols)),
            tuple(sorted(sizes)),
            tuple(sorted(rels)),
            tuple(sorted(sups)),
            cued_intents(words, bool(rels)),
        )

    @classmethod
    def from_query(cls, query: str, labels: Sequence[str], matcher, config: LLMConfig) -> "Vocabulary":
        """Labels some phrase of the query may name (``prompting.admissible_labels``); colours, sizes, relations
        and superlatives its words cue; intents its words allow (``prompting.cued_intents``). The model still
        chooses the
        structure (which noun is the target, which the anchor, the intent among those allowed); it can no longer
        name a colour or a relation the query does not."""
        from lang3d_ros.llm.parser import tokenize
        from lang3d_ros.llm.prompting import _query_cues, admissible_labels, cued_intents

        words = tokenize(query)
        rels, sups, cols, sizes = _query_cues(words)
        ok = admissible_labels(query, labels, matcher, config)
        return cls(
            tuple(sorted(l for l in set(labels) if l in ok)),
            tuple(sorted(cols)),
            tuple(sorted(sizes)),
            tuple(sorted(rels)),
            tuple(sorted(sups)),
            cued_intents(words, bool(rels)),
        )


def _has_anchors(v: Vocabulary) -> bool:
    """Whether a phrase under ``v`` can have anchors: a relation, or a superlative measured to a reference."""
    return bool(v.relations) or bool({"closest", "farthest"} & set(v.superlatives))


def _phrase_schema(v: Vocabulary, depth: int, compact: bool = False) -> dict:
    props: dict = {"label": {"enum": list(v.labels) + [ANY, OTHER]}}
    if not compact or v.colors:
        props["color"] = {"enum": list(v.colors) + [NONE]}
    if depth == 1:
        for key, values in (("size", v.sizes), ("relation", v.relations), ("superlative", v.superlatives)):
            if not compact:
                props[key] = {"enum": list(values) + [NONE]}
            elif values:  # only the target carries these: a cue the query names must be used (the check wants it)
                props[key] = {"enum": list(values)}
        if not compact or _has_anchors(v):
            items = _phrase_schema(v, depth + 1, compact)
            props["anchors"] = {"type": "array", "items": items, "maxItems": 2}
            if compact and v.relations:  # "between" takes two anchors, any other relation one
                n = 2 if "between" in v.relations else 1
                props["anchors"].update(minItems=n, maxItems=n)
            elif compact:  # closest / farthest to a reference, or to the robot
                props["anchors"]["maxItems"] = 1
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def request_schema(labels: Sequence[str] | Vocabulary, compact: bool = False) -> dict:
    """The JSON schema of one model answer over these map labels, or over a (narrowed) Vocabulary.
    ``compact``: keys whose enum would be only "none" (no colour, size, relation, superlative cue; no attribute
    intent) are left out, so the answer is shorter, and a size, relation or superlative the query cues must be
    used (only the target carries them; anchors: two for "between", one for another relation, at most one
    reference for closest / farthest); the trained adapter writes this form (``compact_model_json``)."""
    v = labels if isinstance(labels, Vocabulary) else Vocabulary(tuple(sorted({str(l) for l in labels if l})))
    props: dict = {"intent": {"enum": list(v.intents)}, "target": _phrase_schema(v, 1, compact)}
    if not compact or "attribute" in v.intents:
        props["attribute"] = {"enum": list(ATTRIBUTES) + [NONE]}
    return {"type": "object", "additionalProperties": False, "properties": props, "required": list(props)}


def compact_model_json(req: Request, vocab: Vocabulary) -> dict | None:
    """``request_to_model_json`` with only the keys of ``request_schema(vocab, compact=True)``: the training
    target of the adapter. None when the request uses a value the (cue-narrowed) vocabulary does not offer (a
    typo hid the cue): such a sample would teach an answer the grammar cannot write. Labels are not checked."""
    full = request_to_model_json(req)
    schema = request_schema(replace(vocab, labels=()), compact=True)

    def keep(d: dict, sch: dict) -> dict | None:
        out = {}
        for k, val in d.items():
            sub = sch["properties"].get(k)
            if sub is None:
                if val not in (NONE, []):
                    return None
                continue
            if "enum" in sub:
                if k != "label" and val not in sub["enum"]:
                    return None
                out[k] = val
            elif sub.get("type") == "array":
                items = [keep(a, sub["items"]) for a in val]
                if any(i is None for i in items) or not sub.get("minItems", 0) <= len(items) <= sub["maxItems"]:
                    return None
                out[k] = items
            else:
                kept = keep(val, sub)
                if kept is None:
                    return None
                out[k] = kept
        return out

    return keep(full, schema)


ADAPTER_OBJECTS_MAX = 40
"""At most this many map labels in the adapter's prompt (sorted)."""


def adapter_prompt(query: str, labels: Sequence[str]) -> str:
    """The trained adapter's whole prompt (no chat template, no system text, no examples: prefill is short):
    the labels the grammar offers for this query (``Vocabulary.from_query``: the map labels some phrase of the
    query may name, usually 0-3; "-" when none), then the sentence. Training (``datagen.adapter_sample``) and
    inference use this function."""
    objects = ", ".join(sorted({str(l) for l in labels if l})[:ADAPTER_OBJECTS_MAX]) or "-"
    return f"objects: {objects}\nsentence: {' '.join(str(query).split())}\njson:"


def _none(v):
    return None if v in (None, NONE, "") else v


def _phrase_dict(d: dict, depth: int = 1) -> dict:
    label = d.get("label", ANY)
    out: dict = {"label": "" if label == ANY else label, "color": _none(d.get("color"))}
    if depth == 1:
        out.update(
            size=_none(d.get("size")), relation=_none(d.get("relation")), superlative=_none(d.get("superlative"))
        )
        anchors = [_phrase_dict(a, 2) for a in d.get("anchors") or []]
        rel, sup = out["relation"], out["superlative"]
        if rel is not None and not anchors:  # the schema cannot tie anchors to a relation: a bare one is dropped
            out["relation"] = rel = None
        if rel is None and sup in ("closest", "farthest") and anchors:
            out["reference"] = anchors[0]  # "closest to X": the anchor is what distance is measured to
        elif rel == "between":
            out["anchors"] = anchors[:2] if len(anchors) == 2 else anchors[:1] * 2
        elif rel is not None:
            out["anchors"] = anchors[:1]
    return out


def model_json_to_request(d: dict) -> Request:
    """A model answer in the schema's shape -> validated Request. Every answer the schema admits converts: a
    relation without anchors is dropped, "between" with one anchor uses it twice, anchors without a relation
    are the reference of closest / farthest or ignored."""
    if not isinstance(d, dict):
        raise ValueError("model output is not a JSON object")
    intent = d.get("intent", "ground")
    out: dict = {"intent": intent}
    t = d.get("target")
    if isinstance(t, dict) and not (intent == "caption" and t.get("label") in (ANY, OTHER)):
        out["target"] = _phrase_dict(t)
    if intent == "attribute":
        out["attribute"] = _none(d.get("attribute")) or "color"
    return request_from_dict(out)


def request_to_model_json(req: Request) -> dict:
    """The inverse of ``model_json_to_request`` for requests the schema can express (used for few-shot examples
    and for scoring candidates in the same format the model writes)."""

    def phrase(p, depth: int) -> dict:
        d = {"label": p.label or ANY if p is not None else ANY, "color": (p.color if p is not None else None) or NONE}
        if depth == 1:
            anchors = list(p.anchors) if p is not None else []
            if p is not None and p.reference is not None:
                anchors = [p.reference]
            d.update(
                size=(p.size if p is not None else None) or NONE,
                relation=(p.relation if p is not None else None) or NONE,
                superlative=(p.superlative if p is not None else None) or NONE,
                anchors=[phrase(a, 2) for a in anchors],
            )
        return {k: str(v) if not isinstance(v, list) else v for k, v in d.items()}

    return {"intent": str(req.intent), "target": phrase(req.target, 1), "attribute": str(req.attribute or NONE)}


def dumps(d: dict) -> str:
    """The exact text the grammar makes the model write for ``d`` (separators ', ' and ': ')."""
    return json.dumps(d, separators=(", ", ": "))


@dataclass
class DecodeStats:
    """What one constrained decode did."""

    model_tokens: int = 0
    """Tokens the model chose (one forward step each)."""
    forced_tokens: int = 0
    """Tokens the grammar forced (keys, punctuation), fed to the model in one step per run."""
    prompt_tokens: int = 0
    """Prompt length (the system prompt's prefix cache included)."""
    seconds: float = 0.0


decode_log: list[dict] | None = None
"""When a list, every ``generate_request`` appends what it decoded: query, text, valid_json (meets the schema),
consistent (became a Request), token counts and seconds. Benchmarks set it; None (default) records nothing."""
_TOKENIZERS: dict[int, object] = {}
_TOK_LOCK = threading.Lock()


def _ll_tokenizer(backend):
    """The llguidance tokenizer of a transformers backend, built once (~1 s)."""
    import llguidance.hf

    key = id(backend.tokenizer)
    with _TOK_LOCK:
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = llguidance.hf.from_tokenizer(
                backend.tokenizer, n_vocab=backend.model.get_output_embeddings().weight.shape[0]
            )
        return _TOKENIZERS[key]


_PREFIX: dict[int, tuple[list[int], object]] = {}


def _prefix_cache(backend, system: dict, ids: list[int]):
    """(a copy of the KV cache of the system message, its token count) when ``ids`` starts with it, else
    (None, 0). The system prompt is the same for every request, so its prefill runs once per backend."""
    import torch

    prefix = backend.tokenizer.apply_chat_template(
        [system], add_generation_prompt=False, tokenize=True, return_dict=True
    )["input_ids"]
    if len(prefix) >= len(ids) or ids[: len(prefix)] != prefix:
        return None, 0
    key = id(backend)
    if key not in _PREFIX or _PREFIX[key][0] != prefix:
        res = backend.model(input_ids=torch.tensor([prefix], device=backend.model.device), use_cache=True)
        _PREFIX[key] = (prefix, res.past_key_values)
    return copy.deepcopy(_PREFIX[key][1]), len(prefix)


def _mask(matcher, vocab: int) -> np.ndarray:
    """(vocab,) bool: tokens the grammar allows next."""
    words = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint32)
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:vocab].astype(bool)


def constrained_generate(
    backend, messages: list[dict] | str, schema: dict, max_new_tokens: int, timeout_s: float
) -> tuple[str, DecodeStats]:
    """Greedy decoding of a local transformers model under the JSON ``schema`` (llguidance token masks) after
    chat ``messages`` (chat template) or a plain prompt string.
    The output is valid JSON of the schema unless ``max_new_tokens`` or ``timeout_s`` cut it (LLMUnavailable)."""
    import llguidance
    import torch

    t0 = time.perf_counter()
    tok, model = backend.tokenizer, backend.model
    vocab = int(model.get_output_embeddings().weight.shape[0])
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=SEPARATORS)
    matcher = llguidance.LLMatcher(_ll_tokenizer(backend), grammar, log_level=0)
    if matcher.is_error():
        raise ValueError(f"schema rejected by the grammar compiler: {matcher.get_error()}")
    stats = DecodeStats()
    out: list[int] = []
    with backend._lock, torch.no_grad():
        if isinstance(messages, str):  # a plain prompt (the trained adapter's): no chat template, no prefix cache
            ids, past, start = tok(messages, add_special_tokens=False)["input_ids"], None, 0
        else:
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)[
                "input_ids"
            ][0].tolist()
            past, start = _prefix_cache(backend, messages[0], ids)
        stats.prompt_tokens = len(ids)
        res = model(input_ids=torch.tensor([ids[start:]], device=model.device), past_key_values=past, use_cache=True)
        past, logits = res.past_key_values, res.logits[0, -1]
        while not matcher.is_stopped() and not matcher.is_accepting():
            if len(out) >= max_new_tokens or time.perf_counter() - t0 > timeout_s:
                raise LLMUnavailable(
                    f"constrained decoding stopped after {len(out)} tokens "
                    f"({time.perf_counter() - t0:.1f} s): the answer is incomplete"
                )
            forced = matcher.compute_ff_tokens()
            if forced:
                step = forced
                stats.forced_tokens += len(forced)
            else:
                allowed = torch.from_numpy(_mask(matcher, vocab)).to(logits.device)
                step = [int(torch.where(allowed, logits.float(), float("-inf")).argmax())]
                stats.model_tokens += 1
            if not matcher.consume_tokens(step):
                raise ValueError(f"grammar refused tokens {step}: {matcher.get_error()}")
            out += step
            if matcher.is_accepting():
                break
            res = model(input_ids=torch.tensor([step], device=model.device), past_key_values=past, use_cache=True)
            past, logits = res.past_key_values, res.logits[0, -1]
    stats.seconds = time.perf_counter() - t0
    return tok.decode(out, skip_special_tokens=True), stats


def generate_request(backend, query: str, labels: Sequence[str], config: LLMConfig, matcher=None) -> Request:
    """The model's request for ``query`` over the map's ``labels``, decoded under ``request_schema`` with
    per-query few-shot examples; with a ``matcher`` (LabelMatcher) the schema is narrowed to the query's cues
    (``Vocabulary.from_query``). A backend with a trained adapter (``backend.adapter``: its manifest) gets
    ``adapter_prompt`` and the compact schema instead. LLMUnavailable when the model cannot answer."""
    from lang3d_ros.llm.prompting import build_messages

    vocab = Vocabulary.from_query(query, labels, matcher, config) if matcher is not None else labels
    if getattr(backend, "adapter", None):  # trained on the compact form and a short prompt without examples
        shown = vocab.labels if isinstance(vocab, Vocabulary) else labels
        schema, messages = request_schema(vocab, compact=True), adapter_prompt(query, shown)
    else:
        schema, messages = request_schema(vocab), build_messages(query, labels, config.few_shot)
    stats = DecodeStats()
    if hasattr(backend, "model") and hasattr(backend, "tokenizer"):
        text, stats = constrained_generate(backend, messages, schema, max(config.max_new_tokens, 160), config.timeout_s)
    else:  # an OpenAI-compatible server enforces the same schema
        text = backend.generate(
            messages,
            max(config.max_new_tokens, 96),
            config.timeout_s,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "lang3d_request", "strict": True, "schema": schema},
            },
        )
    record = {
        "query": query,
        "text": text,
        "valid_json": False,
        "consistent": False,
        "model_tokens": stats.model_tokens,
        "forced_tokens": stats.forced_tokens,
        "prompt_tokens": stats.prompt_tokens,
        "seconds": stats.seconds,
    }
    if decode_log is not None:
        decode_log.append(record)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"model output is not JSON: {exc.msg}") from exc
    record["valid_json"] = _valid(obj, schema)
    req = model_json_to_request(obj)
    record["consistent"] = True
    return req


def _valid(value, schema: dict) -> bool:
    """Whether ``value`` meets the subset of JSON schema ``request_schema`` uses (enum, object, array)."""
    if "enum" in schema:
        return value in schema["enum"]
    if schema.get("type") == "object":
        props = schema["properties"]
        return (
            isinstance(value, dict)
            and set(value) <= set(props)
            and set(schema.get("required", ())) <= set(value)
            and all(_valid(v, props[k]) for k, v in value.items())
        )
    if schema.get("type") == "array":
        return (
            isinstance(value, list)
            and schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
            and all(_valid(v, schema["items"]) for v in value)
        )
    return True
