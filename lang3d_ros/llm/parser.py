"""Deterministic parser for common English referring expressions, questions and instructions.

Covers: "[the] [superlative] [size] [colour] NOUN [RELATION NP | between NP and NP | closest to NP]",
nested to the right ("the mug on the table nearest the door": the table is the one nearest the door);
questions "how many ...", "what colour is ...", "how big is ...", "what is on/near ... X", "where is
...", "describe ..."; instructions "bring/take X (from A) to B", "put X on Y", "go to X", "pick up X",
joined by "then". It cannot handle negation, pronouns, ordinals ("the second chair") or
relative clauses other than "that/which is".
"""

from __future__ import annotations

from lang3d_ros.llm.colors import canonical_color
from lang3d_ros.llm.frontend import Normalized, normalize, words_of
from lang3d_ros.llm.labels import normalize_label, singular
from lang3d_ros.llm.request import Phrase, Request, Step

# multi-word cues first (longest match wins)
_REL_CUES = [
    ("to the left of", "left_of"),
    ("on the left of", "left_of"),
    ("on the left side of", "left_of"),
    ("to the left side of", "left_of"),
    ("left of", "left_of"),
    ("to the right of", "right_of"),
    ("on the right of", "right_of"),
    ("on the right side of", "right_of"),
    ("to the right side of", "right_of"),
    ("right of", "right_of"),
    ("in front of", "in_front_of"),
    ("at the back of", "behind"),
    ("in back of", "behind"),
    ("behind", "behind"),
    ("on top of", "on"),
    ("onto", "on"),
    ("upon", "on"),
    ("on", "on"),
    ("atop", "on"),
    ("underneath", "under"),
    ("beneath", "under"),
    ("below", "under"),
    ("under", "under"),
    ("next to", "near"),
    ("close to", "near"),
    ("near to", "near"),
    ("adjacent to", "near"),
    ("beside", "near"),
    ("near", "near"),
    ("by", "near"),
    ("between", "between"),
]
_SUP_REF_CUES = [
    ("closest to", "closest"),
    ("nearest to", "closest"),
    ("nearest", "closest"),
    ("closest", "closest"),
    ("farthest from", "farthest"),
    ("furthest from", "farthest"),
    ("farthest", "farthest"),
    ("furthest", "farthest"),
    ("most distant from", "farthest"),
]
_SUP_ADJ = {
    "closest": "closest",
    "nearest": "closest",
    "farthest": "farthest",
    "furthest": "farthest",
    "largest": "largest",
    "biggest": "largest",
    "smallest": "smallest",
    "tiniest": "smallest",
    "leftmost": "leftmost",
    "rightmost": "rightmost",
    "highest": "highest",
    "topmost": "highest",
    "tallest": "highest",
    "lowest": "lowest",
    "bottommost": "lowest",
}
_SIDE_CUES = [
    ("on the left", "leftmost"),
    ("on the right", "rightmost"),
    ("at the left", "leftmost"),
    ("at the right", "rightmost"),
]
_SIZE_ADJ = {"big": "large", "large": "large", "huge": "large", "small": "small", "little": "small", "tiny": "small"}
_DETS = {"the", "a", "an", "any", "some", "that", "this", "those", "these", "my", "your"}
_FILLER = {
    "that",
    "which",
    "is",
    "are",
    "located",
    "sitting",
    "placed",
    "lying",
    "standing",
    "resting",
    "positioned",
    "situated",
    "one",
    "ones",
    "please",
    "there",
    "currently",
    "right",
    "just",
    "the",
}
_ROBOT_WORDS = {"me", "you", "robot", "the robot", "us", "here"}
_BOUNDARY = {"and", "then", "from", "to", "with", "in", "of", "for", "into", "at"}
_EVERYTHING = {"everything", "anything", "all", "stuff", "things", "objects", "items", "whatever"}
_CAPTION_NOUNS = {"scene", "room", "map", "environment", "space", "area", "surroundings", "place"}


def tokenize(text: str) -> list[str]:
    """Lower-case words with contractions expanded (``frontend.words_of``); hyphens split words."""
    return [x for w in words_of(text) for x in w.split("-") if x]


def _match(words: list[str], i: int, cues) -> tuple[str, int] | None:
    for cue, val in cues:
        c = cue.split()
        if words[i : i + len(c)] == c:
            return val, len(c)
    return None


def _is_boundary(words: list[str], i: int) -> bool:
    return (
        words[i] in _BOUNDARY
        or _match(words, i, _REL_CUES) is not None
        or _match(words, i, _SUP_REF_CUES) is not None
        or _match(words, i, _SIDE_CUES) is not None
    )


class _NP:
    """Recursive-descent noun-phrase reader over a word list."""

    def __init__(self, words: list[str]) -> None:
        self.w = words
        self.i = 0

    def skip(self, words: set[str]) -> None:
        while self.i < len(self.w) and self.w[self.i] in words:
            self.i += 1

    def phrase(self, depth: int = 0) -> Phrase | None:
        if depth > 2:
            return None
        self.skip(_DETS | _FILLER)
        sup = size = color = None
        while self.i < len(self.w):
            w = self.w[self.i]
            if w in _SUP_ADJ:
                sup = _SUP_ADJ[w]
            elif w in _SIZE_ADJ:
                size = _SIZE_ADJ[w]
            elif canonical_color(w) is not None:
                color = canonical_color(w)
            elif w not in _DETS:  # a determiner among the adjectives is skipped; anything else ends them
                break
            self.i += 1
        noun = []
        while self.i < len(self.w) and not (noun and _is_boundary(self.w, self.i)) and self.w[self.i] not in _BOUNDARY:
            if self.w[self.i] not in _FILLER and self.w[self.i] not in _DETS:
                noun.append(self.w[self.i])
            self.i += 1
            if noun and self.i < len(self.w) and self.w[self.i] in _FILLER:
                self.skip(_FILLER)
                break
        label = normalize_label(" ".join(noun))
        if label in ("object", "objects", "thing", "things", "item", "items", "something", "anything", "what"):
            label = ""
        if not noun and sup is None and color is None and size is None:
            return None
        relation, anchors, reference = None, (), None
        self.skip(_FILLER)
        if self.i < len(self.w):
            side = _match(self.w, self.i, _SIDE_CUES)
            rel = _match(self.w, self.i, _REL_CUES)
            sref = _match(self.w, self.i, _SUP_REF_CUES)
            if side and not (rel and rel[1] > side[1]):
                sup = sup or side[0]
                self.i += side[1]
            elif sref:
                sup, self.i = sref[0], self.i + sref[1]
                reference = self._reference(depth)
            elif sup in ("closest", "farthest") and self.w[self.i] in ("to", "from"):
                self.i += 1
                reference = self._reference(depth)
            elif rel:
                self.i += rel[1]
                relation = rel[0]
                if relation == "between":
                    start = self.i
                    a = self.phrase(depth + 1)
                    plural = a is not None and any(w != singular(w) for w in self.w[start : self.i])
                    if plural and (self.i >= len(self.w) or self.w[self.i] != "and"):
                        anchors = (a, a)  # "between the tables": any two of them
                    else:
                        self.skip({"and"})
                        b = self.phrase(depth + 1)
                        if a is None or b is None:
                            return None
                        anchors = (a, b)
                else:
                    a = self.phrase(depth + 1)
                    if a is None:
                        return None
                    anchors = (a,)
        # a trailing superlative after the relation's anchor belongs to the anchor (right attachment)
        return Phrase(label, color, size, relation, anchors, sup, reference)

    def _reference(self, depth: int) -> Phrase | None:
        self.skip(_DETS)
        if (
            self.i >= len(self.w)
            or self.w[self.i] in _ROBOT_WORDS
            or " ".join(self.w[self.i : self.i + 2]) in _ROBOT_WORDS
        ):
            self.i = min(len(self.w), self.i + 1)
            return None
        return self.phrase(depth + 1)


def parse_phrase(text: str) -> Phrase | None:
    """A referring expression -> Phrase, or None when no noun phrase is found."""
    words = tokenize(text)
    for lead in (
        ["find"],
        ["show", "me"],
        ["locate"],
        ["where", "is"],
        ["where", "are"],
        ["look", "for"],
        ["i", "want"],
        ["i", "need"],
        ["get"],
        ["give", "me"],
        ["point", "to"],
        ["which"],
    ):
        if words[: len(lead)] == lead:
            words = words[len(lead) :]
            break
    return _NP(words).phrase()


def _tail_np(words: list[str]) -> Phrase | None:
    return _NP(words).phrase()


def _task(words: list[str]) -> tuple[Step, ...] | None:
    clauses, cur = [], []
    for w in words:
        if w == "then":
            if cur and cur[-1] == "and":
                cur.pop()
            clauses.append(cur)
            cur = []
        else:
            cur.append(w)
    clauses.append(cur)
    steps: list[Step] = []
    for c in clauses:
        s = _task_clause(
            [w for w in c if w not in ("please", "and")] if c and c[-1] == "and" else [w for w in c if w != "please"]
        )
        if s is None:
            return None
        steps += s
    return tuple(steps) if steps else None


def _split_at(words: list[str], keys: set[str]) -> tuple[list[str], str | None, list[str]]:
    for i, w in enumerate(words):
        if w in keys and i > 0:
            return words[:i], w, words[i + 1 :]
    return words, None, []


def _task_clause(w: list[str]) -> list[Step] | None:
    if not w:
        return None
    verb = w[0]
    if (
        verb in ("go", "navigate", "drive", "move", "head", "walk")
        and len(w) > 1
        and w[1] in ("to", "towards", "toward")
    ):
        p = _tail_np(w[2:])
        return [Step("goto", p)] if p else None
    if verb in ("bring", "take", "carry", "fetch", "get", "move", "deliver"):
        rest = w[1:]
        to_me = rest[:1] == ["me"]
        if to_me:
            rest = rest[1:]
        obj_words, key, after = _split_at(rest, {"from", "to", "into", "onto"})
        src_words: list[str] = []
        if key == "from":
            src_words, key2, after2 = _split_at(after, {"to", "into", "onto"})
            key, after = (key2, after2) if key2 else (None, [])
        obj = _tail_np(obj_words)
        if obj is None:
            return None
        steps: list[Step] = []
        if src_words:
            src = _tail_np(src_words)
            if src is None:
                return None
            steps += [
                Step("goto", Phrase(src.label, src.color, src.size, None, (), "closest", obj)),
                Step("pick", Phrase(obj.label, obj.color, obj.size, None, (), "closest", src)),
            ]
        else:
            steps += [Step("goto", obj), Step("pick", obj)]
        dest = _tail_np(after) if key else None
        if key and dest is None and after[:1] not in (["me"], ["here"]):
            return None
        if dest is None:  # "bring me the mug" / "bring the mug here": back to where the robot is now
            return steps + [Step("goto", Phrase("me")), Step("place", Phrase("me"))]
        return steps + [Step("goto", dest), Step("place", dest)]
    if verb in ("put", "place", "set", "drop", "leave"):
        rest = w[1:]
        for i in range(1, len(rest)):
            rel = _match(rest, i, _REL_CUES)
            if rel or rest[i] in ("in", "into"):
                obj = _tail_np(rest[:i])
                dest = _tail_np(rest[i + (rel[1] if rel else 1) :])
                if obj is None or dest is None:
                    return None
                return [Step("goto", obj), Step("pick", obj), Step("goto", dest), Step("place", dest)]
        return None
    if verb in ("pick", "grab", "grasp", "lift"):
        rest = w[1:]
        if rest[:1] == ["up"]:
            rest = rest[1:]
        obj = _tail_np(rest)
        return [Step("goto", obj), Step("pick", obj)] if obj else None
    return None


_COUNT_TAILS = [
    ["in", "this", "room"],
    ["in", "the", "room"],
    ["in", "the", "scene"],
    ["in", "the", "map"],
    ["in", "here"],
    ["are", "there"],
    ["is", "there"],
    ["there", "are"],
    ["in", "total"],
    ["altogether"],
    ["are", "here"],
    ["do", "you", "see"],
    ["can", "you", "see"],
    ["you", "see"],
    ["do", "we", "have"],
    ["do", "i", "have"],
    ["are", "around"],
    ["here"],
    ["around"],
    ["there"],
]
_COUNT_DROP = {"do", "you", "see", "can", "i", "we", "does", "the", "map", "have", "of", "all"}


def _count_phrase(rest: list[str]) -> Phrase | None:
    """'chairs are there in the room' -> the counted phrase (location fillers dropped)."""
    changed = True
    while changed:
        changed = False
        for tail in _COUNT_TAILS:
            for k in range(len(rest) - len(tail) + 1):
                if rest[k : k + len(tail)] == tail:
                    rest = rest[:k] + rest[k + len(tail) :]
                    changed = True
                    break
    return _tail_np([x for x in rest if x not in _COUNT_DROP] or rest)


def parse(text: str | Normalized) -> Request | None:
    """A query, question or instruction -> Request, or None when none of the known forms fits. Text goes through
    ``frontend.normalize`` first (politeness and lead-ins removed); a navigation lead-in ("take me to") makes the
    rest a grounding request for the navigation target."""
    n = text if isinstance(text, Normalized) else normalize(text)
    w = list(n.words)
    if not w:
        return None
    if n.navigation:
        p = _tail_np(w)
        return Request("ground", p) if p is not None and (p.label or p.color or p.relation) else None
    if (
        w[:2] in (["how", "many"], ["number", "of"])
        or w[:4] == ["what", "is", "the", "number"]
        or (w[0] in ("count", "tally") and len(w) > 1)
    ):
        start = 2 if w[0] in ("how", "number") else 1 if w[0] in ("count", "tally") else 5
        rest = w[start:]
        if rest[:1] == ["up"]:
            rest = rest[1:]
        p = _count_phrase(rest)
        return Request("count", p) if p else None
    m_col = (
        w[:2] == ["what", "color"]
        or w[:2] == ["what", "colour"]
        or w[:2] == ["which", "color"]
        or w[:2] == ["which", "colour"]
    )
    if m_col or w[:5] in (["what", "is", "the", "color", "of"], ["what", "is", "the", "colour", "of"]):
        rest = w[2:] if m_col else w[5:]
        p = _tail_np([x for x in rest if x not in ("is", "are", "does", "do", "have", "has")])
        return Request("attribute", p, "color") if p else None
    if w[:2] in (
        ["how", "big"],
        ["how", "large"],
        ["how", "small"],
        ["what", "size"],
        ["how", "tall"],
        ["how", "wide"],
        ["how", "long"],
        ["how", "high"],
    ) or w[:5] == ["what", "is", "the", "size", "of"]:
        rest = w[5:] if w[2:4] == ["the", "size"] else w[2:]
        p = _tail_np([x for x in rest if x not in ("is", "are")])
        return Request("attribute", p, "size") if p else None
    if w[0] == "where" or w[:3] in (["can", "you", "find"],):
        rest = [
            x
            for x in w[1:]
            if x
            not in (
                "is",
                "are",
                "can",
                "i",
                "find",
                "do",
                "we",
                "keep",
                "the",
                "did",
                "leave",
                "left",
                "put",
                "my",
                "you",
                "see",
                "was",
                "were",
                "has",
                "have",
                "been",
                "does",
                "go",
                "went",
            )
        ]
        p = _tail_np(["the"] + rest)
        return Request("where", p) if p else None
    if (
        w[0] in ("describe", "caption", "summarize", "summarise")
        or w[:3] in (["what", "do", "you"],)
        or w[:4] in (["what", "is", "in", "the"], ["what", "is", "around", "the"])
        or w[:3] == ["tell", "me", "about"]
    ):
        rest = w[3:] if w[0] == "tell" else w[1:] if w[0] in ("describe", "caption", "summarize", "summarise") else []
        rest = [x for x in rest if x not in ("the", "a", "this", "what", "you", "see")]
        if not rest or (len(rest) == 1 and rest[0] in _CAPTION_NOUNS) or (w[:4] == ["what", "is", "in", "the"]):
            return Request("caption", None)
        p = _tail_np(rest)
        return Request("caption", p) if p else None
    if w[0] in _EVERYTHING and len(w) > 2 and _match(w, 1, _REL_CUES):
        w = ["what"] + w[1:]
    if w[0] in ("what", "which", "who") and len(w) > 2:
        rest = [
            x
            for x in w[1:]
            if x
            not in (
                "is",
                "are",
                "objects",
                "things",
                "items",
                "there",
                "lies",
                "sits",
                "stands",
                "sitting",
                "lying",
                "standing",
                "placed",
                "resting",
                "kept",
                "stored",
                "left",
                "exactly",
                "else",
                "currently",
                "right",
                "now",
            )
        ]
        rel = _match(rest, 0, _REL_CUES)
        if rel:
            p = _tail_np(["object"] + rest)
            if p is not None and p.relation:
                return Request("relations", p)
        p = _tail_np(w[1:])
        if p is not None and p.label:
            return Request("ground", p)
    steps = _task(w)
    if steps:
        return Request("task", None, None, steps)
    p = parse_phrase(" ".join(w))
    # "the black thing on the table": no noun, but a colour or relation says which object
    return Request("ground", p) if p is not None and (p.label or p.color or p.relation) else None
