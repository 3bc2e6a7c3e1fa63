"""Text -> one validated Request, once per service call, and the one place that routes it.

``understand(query, objects, ...)`` runs the front end (``frontend.normalize``), the deterministic parser, and
binds every noun to the map's labels (rules, then the text encoder); the model, when there is one, ranks the
candidate requests by log-likelihood (SayCan-style closed-set scoring) and fills what the parser left open (a
noun only the encoder relates to a map label, a sentence the parser cannot read) under a JSON-schema grammar.
A noun that names nothing in the map raises ``Lang3DError(NOT_FOUND)`` naming the closest labels.
``Understanding.route`` decides relevancy (a plain noun phrase on the language field) vs reasoning (everything
else, on the map's objects). It cannot read negation, pronouns, ordinals or comparisons between two objects.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Sequence

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.grounding.objects import SceneObject
from lang3d_ros.llm.backends import LLMBackend, LLMUnavailable
from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.llm.frontend import Normalized, normalize
from lang3d_ros.llm.labels import LabelMatcher, label_similarity
from lang3d_ros.llm.parser import parse
from lang3d_ros.llm.request import Intent, Phrase, Request, Step, request_from_dict

log = logging.getLogger(__name__)

OTHER = "other"
"""The closed-set answer "none of the map's labels" (the grammar offers it beside the labels)."""
_UNBOUND = {"", "me", "user", "here", "floor", "ground"}


class AnsweredBy(StrEnum):
    """Which component decided the answer (the ``answered_by`` string of the ROS services)."""

    RELEVANCY = "relevancy"
    """The language field's relevancy (a plain noun phrase)."""
    LLM = "llm"
    """The 3D-LLM: it wrote the request under the grammar, chose among candidate requests, or filled a slot."""
    PARSER = "parser"
    """The deterministic parser and the label matcher, without the model."""


class Route(StrEnum):
    RELEVANCY = "relevancy"
    REASONING = "reasoning"


@dataclass(frozen=True)
class Understanding:
    """One query, understood once."""

    request: Request
    answered_by: AnsweredBy
    normalized: Normalized
    note: str = ""
    candidates: tuple[Request, ...] = ()
    """The candidate requests the model ranked (empty when it did not rank)."""
    scores: tuple[float, ...] = ()
    """Mean per-token log-likelihood of each candidate under the model, same order."""
    noun_phrase: str = ""
    """The target as the person said it, lead-ins removed: what the relevancy field reads."""

    @property
    def navigation(self) -> bool:
        return self.normalized.navigation

    def target(self) -> Phrase | None:
        r = self.request
        return r.target if r.target is not None else (r.steps[0].target if r.steps else None)

    def route(self, level: str = "") -> Route:
        """Relevancy for a plain noun phrase (label only) or when a feature level is asked for; reasoning on the
        map's objects for relations, superlatives, colours, sizes, questions and tasks."""
        if level:
            return Route.RELEVANCY
        t = self.request.target
        plain = t is not None and not (t.color or t.size or t.relation or t.superlative or t.anchors)
        return Route.RELEVANCY if self.request.intent == Intent.GROUND and plain and t.label else Route.REASONING


def _walk_labels(p: Phrase | None, out: list[str]) -> None:
    if p is None:
        return
    if p.label not in _UNBOUND:
        out.append(p.label)
    for a in p.anchors:
        _walk_labels(a, out)
    _walk_labels(p.reference, out)


def request_labels(req: Request) -> list[str]:
    """Every object label a request names (target, anchors, references, steps), in order, with repeats."""
    out: list[str] = []
    _walk_labels(req.target, out)
    for s in req.steps:
        _walk_labels(s.target, out)
    return out


def _relabel_phrase(p: Phrase | None, mapping: dict[str, str]) -> Phrase | None:
    if p is None:
        return None
    return replace(
        p,
        label=mapping.get(p.label, p.label),
        anchors=tuple(_relabel_phrase(a, mapping) for a in p.anchors),
        reference=_relabel_phrase(p.reference, mapping),
    )


def relabel(req: Request, mapping: dict[str, str]) -> Request:
    """The request with labels replaced by ``mapping`` (labels not in it unchanged)."""
    return replace(
        req,
        target=_relabel_phrase(req.target, mapping),
        steps=tuple(Step(s.action, _relabel_phrase(s.target, mapping)) for s in req.steps),
    )


def not_found(noun: str, labels: Sequence[str], matcher: LabelMatcher) -> Lang3DError:
    """NOT_FOUND naming the (up to three) map labels closest to ``noun``."""
    uniq = sorted(set(labels))
    if not uniq:
        return Lang3DError(ErrorCode.NOT_FOUND, f"nothing called {noun!r} in the map: the map has no objects yet")
    sims = matcher.similarity(noun, uniq)
    closest = [uniq[i] for i in sorted(range(len(uniq)), key=lambda i: -sims[i])[:3]]
    return Lang3DError(
        ErrorCode.NOT_FOUND, f"nothing called {noun!r} in the map; the closest labels in it are {', '.join(closest)}"
    )


def label_options(noun: str, labels: Sequence[str], matcher: LabelMatcher, config: LLMConfig) -> tuple[list[str], bool]:
    """(map labels ``noun`` may name, best first; whether the choice is settled without the model).

    Settled: a rule match (the noun itself: exact, synonym, plural, head noun) or an encoder match above
    ``bind_threshold`` that beats the runner-up by ``bind_margin``. Open: encoder matches between
    ``open_threshold`` and that. Empty: nothing close (NOT_FOUND)."""
    choices = matcher.choices(noun, labels)
    if not choices:
        return [], True
    if choices[0].how == "rule":
        return [noun], True
    if choices[0].how != "encoder":  # spelling alone never names a different object
        return [], True
    best = choices[0].score
    second = choices[1].score if len(choices) > 1 else -1.0
    if best >= config.bind_threshold and best - second >= config.bind_margin:
        return [choices[0].label], True
    opts = [c.label for c in choices if c.score >= config.open_threshold][:3]
    return opts, False


@dataclass(frozen=True)
class Candidate:
    """One reading of the parsed request with its nouns bound to map labels."""

    request: Request
    labels: dict[str, str]
    """Query noun -> the map label this candidate binds it to."""


def bind_candidates(
    req: Request, labels: Sequence[str], matcher: LabelMatcher, config: LLMConfig, allow_open: bool
) -> tuple[list[Candidate], dict[str, list[str]]]:
    """Candidates with every noun bound to map labels (best first), and the open nouns with their options.
    Raises NOT_FOUND for a noun that names nothing in the map, or for an open one when ``allow_open`` is False
    and no option reaches ``bind_threshold`` or the request counts (a count needs its category settled: "how
    many sofas" in a map without one must not count its pillows, MiniLM 0.63, or its chairs, 0.61)."""
    nouns = list(dict.fromkeys(request_labels(req)))
    per_noun: list[list[str]] = []
    open_nouns: dict[str, list[str]] = {}
    for noun in nouns:
        opts, settled = label_options(noun, labels, matcher, config)
        if not opts:
            raise not_found(noun, labels, matcher)
        if not settled:
            if not allow_open:
                if req.intent == Intent.COUNT or matcher.similarity(noun, [opts[0]])[0] < config.bind_threshold:
                    raise not_found(noun, labels, matcher)
                opts = opts[:1]
            else:
                open_nouns[noun] = opts
        per_noun.append(opts)
    out = []
    for combo in itertools.islice(itertools.product(*per_noun), config.max_candidates):
        mapping = dict(zip(nouns, combo))
        out.append(Candidate(relabel(req, mapping), mapping))
    return out or [Candidate(req, {})], open_nouns


def _same_tree(a: Phrase | None, b: Phrase | None) -> bool:
    """``a`` (a map label per noun) and ``b`` (the parser's nouns, which may be rule synonyms of those labels) name the
    same labels, relations and superlatives in the same places (colours and sizes aside)."""
    if a is None or b is None:
        return a is b
    return (
        (a.label == b.label or (bool(a.label) and bool(b.label) and label_similarity(b.label, a.label) > 0))
        and a.relation == b.relation
        and a.superlative == b.superlative
        and len(a.anchors) == len(b.anchors)
        and all(_same_tree(x, y) for x, y in zip(a.anchors, b.anchors))
        and _same_tree(a.reference, b.reference)
    )


def _copy_attributes(dst: Phrase | None, src: Phrase | None) -> Phrase | None:
    if dst is None or src is None:
        return dst
    return replace(
        dst,
        color=src.color,
        size=src.size,
        anchors=tuple(_copy_attributes(x, y) for x, y in zip(dst.anchors, src.anchors)),
        reference=_copy_attributes(dst.reference, src.reference),
    )


def bind_attributes_by_syntax(model_req: Request, parser_req: Request | None) -> tuple[Request, bool]:
    """The model's request with each colour and size on the noun the sentence puts it before, as the parser read it.
    Applies only when both requests name the same labels in the same structure (the model chose the objects and
    their relations; an adjective's noun is a matter of word order, which the parser reads exactly). Returns the
    request and whether an attribute moved."""
    if parser_req is None or parser_req.intent != model_req.intent or parser_req.steps or model_req.steps:
        return model_req, False
    if not _same_tree(model_req.target, parser_req.target):
        return model_req, False
    out = replace(model_req, target=_copy_attributes(model_req.target, parser_req.target))
    return out, out != model_req


def _noun_phrase(n: Normalized, req: Request) -> str:
    """What the relevancy field reads for a plain request: the user's words after the lead-in, without articles."""
    words = [w for w in n.words if w not in ("the", "a", "an", "some", "my", "this", "that", "any")]
    t = req.target
    return " ".join(words) if words else (t.label if t is not None else "")


def _parser_request(n: Normalized, labels: Sequence[str], matcher: LabelMatcher, config: LLMConfig) -> Request | None:
    """The parser's reading bound to map labels (its best candidate), or None when it reads nothing or binds nothing."""
    parsed = parse(n)
    if parsed is None:
        return None
    try:
        cands, _ = bind_candidates(request_from_dict(parsed.to_dict()), labels, matcher, config, allow_open=False)
    except ValueError:
        return None
    return cands[0].request


def _counted_nothing(exc: Lang3DError, parsed: Request, n: Normalized, note: str, np_text: str) -> Understanding:
    """A count whose noun names nothing in the map is answered, zero of it ("how many vases are there?" with no
    vase), not refused; any other error is raised again."""
    if exc.code != ErrorCode.NOT_FOUND or parsed.intent != Intent.COUNT:
        raise exc
    return Understanding(parsed, AnsweredBy.PARSER, n, f"{note}{exc}; ", noun_phrase=np_text)


def understand(
    query: str,
    objects: Sequence[SceneObject],
    matcher: LabelMatcher,
    config: LLMConfig,
    backend: LLMBackend | None = None,
) -> Understanding:
    """The query (already through ``frontend.check_query``) as one Request; see the module docstring.
    ValueError when nothing understands it; Lang3DError(NOT_FOUND) when it names nothing in the map."""
    labels = sorted({o.label for o in objects if o.label})
    n = normalize(query)
    use_model = backend is not None and config.mode != "parser_only"
    mode = config.mode
    if mode == "auto":  # the model writes requests only when it was trained to (a verified adapter)
        mode = "llm_first" if getattr(backend, "adapter", None) else "rank"
    if mode != config.mode:
        config = replace(config, mode=mode)
    note = ""
    if use_model and config.mode == "llm_first":
        from lang3d_ros.llm.constrained import generate_request

        # a relative clause the front end rewrote ("the table with the plant on it") reaches the model rewritten
        model_query = n.text if n.relative_clause else query
        try:
            req = generate_request(backend, model_query, labels, config, matcher)
            if OTHER in request_labels(req):
                raise ValueError("the model named no map label")
            from lang3d_ros.llm.prompting import check_against_query

            check_against_query(req, model_query, labels, matcher, config)
            req, moved = bind_attributes_by_syntax(req, _parser_request(n, labels, matcher, config))
            how = "the model's request; colour / size placed by word order" if moved else ""
            return Understanding(req, AnsweredBy.LLM, n, how, noun_phrase=_noun_phrase(n, req))
        except ValueError as exc:
            note = f"model request rejected ({exc}); "
        except LLMUnavailable as exc:
            note = f"model unavailable ({exc}); "
            log.warning("LLM unavailable: %s", exc)
    parsed = parse(n)
    if parsed is not None:
        parsed = request_from_dict(parsed.to_dict())  # the parser's output meets the same schema and limits
    if parsed is None:
        if use_model and config.mode == "rank":
            from lang3d_ros.llm.constrained import generate_request

            try:  # the slot the parser leaves open is the whole request: the model writes it under the grammar
                req = generate_request(backend, query, labels, config, matcher)
            except LLMUnavailable as exc:
                raise ValueError(f"could not understand {query!r} and the model is unavailable ({exc})") from exc
            if OTHER in request_labels(req):
                raise not_found(n.text or query, labels, matcher)
            return Understanding(
                req,
                AnsweredBy.LLM,
                n,
                "the parser did not read it; the model wrote the request",
                noun_phrase=_noun_phrase(n, req),
            )
        raise ValueError(f"{note}could not understand {query!r}: name an object, e.g. 'the mug on the table'")
    np_text = _noun_phrase(n, parsed)
    try:
        cands, open_nouns = bind_candidates(
            parsed, labels, matcher, config, allow_open=use_model and config.mode == "rank"
        )
    except Lang3DError as exc:
        return _counted_nothing(exc, parsed, n, note, np_text)
    if not open_nouns:
        return Understanding(cands[0].request, AnsweredBy.PARSER, n, note, noun_phrase=np_text)
    from lang3d_ros.llm.ranking import rank_labels

    per_noun: dict[str, dict[str, float]] = {}
    try:  # SayCan: the model's log-likelihood of each label (and of "none of them") times a grounding prior,
        # the text encoder's similarity as a softmax with temperature ``rank_temperature`` ("none" sits halfway
        # between open_threshold and bind_threshold); a candidate sums its labels' scores
        none_sim = 0.5 * (config.open_threshold + config.bind_threshold)
        for noun, opts in open_nouns.items():
            sc = rank_labels(backend, query, noun, opts, labels, config.timeout_s, include_other=True)
            sims = list(matcher.similarity(noun, opts)) + [none_sim]
            total = [m + s / config.rank_temperature for m, s in zip(sc, sims)]
            per_noun[noun] = dict(zip(opts, total))
            if total[-1] > max(total[:-1]):
                raise not_found(noun, labels, matcher)
    except LLMUnavailable as exc:  # as without a model: the best label when it is close enough, else NOT_FOUND
        log.warning("LLM unavailable: %s", exc)
        note = f"{note}model unavailable ({exc}); "
        try:
            cands, _ = bind_candidates(parsed, labels, matcher, config, allow_open=False)
        except Lang3DError as nf:
            return _counted_nothing(nf, parsed, n, note, np_text)
        return Understanding(cands[0].request, AnsweredBy.PARSER, n, note, noun_phrase=np_text)
    scores = [sum(per_noun[nn][c.labels[nn]] for nn in open_nouns) for c in cands]
    best = max(range(len(cands)), key=lambda i: scores[i])
    return Understanding(
        cands[best].request,
        AnsweredBy.LLM,
        n,
        note,
        tuple(c.request for c in cands),
        tuple(scores),
        noun_phrase=np_text,
    )
