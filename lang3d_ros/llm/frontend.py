"""The one query validator and the speech front end every request goes through once.

``check_query`` is the only validator of query text (services, ``QueryEngine`` and ``Reasoner`` call it).
``normalize`` turns what people say into the parser's word list: lower case, contractions expanded, punctuation
dropped, politeness and lead-ins ("please", "could you", "I need you to", "show me", "find") removed, and
whether the words asked the robot to move. It knows English only and a fixed list of lead-ins; a lead-in it
does not know stays in the text (the parser then usually fails and the model fills the request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lang3d_ros.errors import ErrorCode, Lang3DError

MAX_QUERY_CHARS = 1024

_CONTRACTIONS = [
    (r"\bwhat's\b", "what is"),
    (r"\bwhats\b", "what is"),
    (r"\bwhere's\b", "where is"),
    (r"\bwheres\b", "where is"),
    (r"\bthat's\b", "that is"),
    (r"\bthats\b", "that is"),
    (r"\bwhich's\b", "which is"),
    (r"\bhow's\b", "how is"),
    (r"\bcolou?r's\b", "color is"),
    (r"\bi'd\b", "i would"),
    (r"\bi'm\b", "i am"),
    (r"\bcan't\b", "cannot"),
    (r"\bthere's\b", "there is"),
    (r"\bit's\b", "it is"),
    (r"\bwanna\b", "want to"),
    (r"\bgimme\b", "give me"),
    (r"\bleft-most\b", "leftmost"),
    (r"\bright-most\b", "rightmost"),
]
# politeness and addressing, removed wherever they stand at the start (repeatedly) or the end
_POLITE_START = [
    "hey robot",
    "hi robot",
    "ok robot",
    "okay robot",
    "robot",
    "hey",
    "hi",
    "okay",
    "ok",
    "um",
    "uh",
    "so",
    "please",
    "kindly",
    "could you please",
    "can you please",
    "would you please",
    "could you",
    "can you",
    "would you",
    "will you",
    "would you mind",
    "i need you to",
    "i want you to",
    "i would like you to",
    "i would like to",
    "i'd like you to",
    "you need to",
    "try to",
    "go ahead and",
    "quickly",
]
_POLITE_END = [
    "please",
    "for me",
    "thanks",
    "thank you",
    "if you can",
    "if you could",
    "now",
    "right now",
    "quickly",
    "real quick",
    "ok",
    "okay",
]
# lead-ins that ask to see an object: removed, the rest is a noun phrase (or a question the parser reads)
_LOOK_LEAD_INS = [
    "show me where",
    "show me",
    "point me to",
    "point me towards",
    "point to",
    "point at",
    "look for",
    "search for",
    "find me",
    "find",
    "locate",
    "spot",
    "highlight",
    "i am looking for",
    "i need",
    "i want",
    "give me",
    "get me",
    "where can i find",
    "can i see",
    "let me see",
    "do you see",
    "do you know where",
]
_NAV_LEAD_INS = [
    "take me over to",
    "take me to",
    "bring me over to",
    "bring me to",
    "guide me to",
    "lead me to",
    "get me to",
    "go over to",
    "go back to",
    "go to",
    "go towards",
    "go toward",
    "go near",
    "go next to",
    "head over to",
    "head to",
    "head towards",
    "head toward",
    "navigate to",
    "navigate towards",
    "drive over to",
    "drive to",
    "drive up to",
    "move over to",
    "move to",
    "move towards",
    "walk over to",
    "walk to",
    "come to",
    "get over to",
    "go over by",
    "go by",
    "go up to",
]


def _phrases(words: list[str]) -> list[list[str]]:
    return sorted((w.split() for w in words), key=len, reverse=True)


_POLITE_START_W, _POLITE_END_W = _phrases(_POLITE_START), _phrases(_POLITE_END)
_LOOK_W, _NAV_W = _phrases(_LOOK_LEAD_INS), _phrases(_NAV_LEAD_INS)


def check_query(text, max_chars: int = MAX_QUERY_CHARS) -> str:
    """The query with whitespace collapsed, or ``Lang3DError(BAD_REQUEST)`` saying why it is unusable: not text,
    not UTF-8, empty, longer than ``max_chars``, or containing control characters other than tab / newline."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Lang3DError(
                ErrorCode.BAD_REQUEST, f"query is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from exc
    if not isinstance(text, str):
        raise Lang3DError(ErrorCode.BAD_REQUEST, f"query must be a string, got {type(text).__name__}")
    if len(text) > max_chars:
        raise Lang3DError(ErrorCode.BAD_REQUEST, f"query has {len(text)} characters; at most {max_chars} are accepted")
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text) or "\x7f" in text:
        raise Lang3DError(ErrorCode.BAD_REQUEST, "query contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Lang3DError(ErrorCode.BAD_REQUEST, f"query is not valid UTF-8 text ({exc.reason})") from exc
    out = " ".join(text.split())
    if not out:
        raise Lang3DError(ErrorCode.BAD_REQUEST, "query is empty")
    return out


@dataclass(frozen=True)
class Normalized:
    """A query as the parser reads it."""

    words: tuple[str, ...]
    """Lower-case words, politeness and lead-ins removed."""
    navigation: bool
    """The query asked the robot to move to something ("take me to ...", "go to ...")."""
    lead_in: str
    """The lead-in that was removed ("find", "take me to", ...), "" when none."""

    relative_clause: bool = False
    """A relative clause was rewritten as a relation ("the table with the plant on it" -> "the table under the
    plant"); ``words`` hold the rewritten form."""

    @property
    def text(self) -> str:
        return " ".join(self.words)


_CLAUSE_OPEN = ({"with"}, {"that", "which"})
_CLAUSE_HAS = {"has", "have", "holds", "carries", "supports"}
_CLAUSE_DETS = {"the", "a", "an", "some", "its"}
_CLAUSE_ENDS = {  # what the clause ends with -> the relation of the head noun to the clause's noun
    ("on", "it"): "under",
    ("on", "top"): "under",
    ("on", "top", "of", "it"): "under",
    ("on", "its", "top"): "under",
    ("next", "to", "it"): "next to",
    ("beside", "it"): "next to",
    ("near", "it"): "near",
    ("by", "it"): "near",
}
"""("X with Y under it" would need "above", which the requests do not have: not rewritten.)"""


def rewrite_relative_clause(words: list[str]) -> list[str] | None:
    """Rewrites "X with (the) Y on it" / "X that has a Y on top" as "X under the Y" ("next to it", "near it" ->
    near); None when the words hold no such clause. The clause's noun keeps its own words."""
    for i, w in enumerate(words):
        if i == 0:
            continue
        if w in _CLAUSE_OPEN[0]:
            j = i + 1
        elif w in _CLAUSE_OPEN[1] and i + 1 < len(words) and words[i + 1] in _CLAUSE_HAS:
            j = i + 2
        else:
            continue
        while j < len(words) and words[j] in _CLAUSE_DETS:
            j += 1
        for end, rel in _CLAUSE_ENDS.items():
            k = len(words) - len(end)
            if k > j and tuple(words[k:]) == end:
                return words[:i] + rel.split() + ["the"] + words[j:k]
    return None


def words_of(text: str) -> list[str]:
    """Lower case, contractions expanded, punctuation dropped -> words (apostrophes inside words kept)."""
    t = text.lower().replace("\u2019", "'")
    for pat, rep in _CONTRACTIONS:
        t = re.sub(pat, rep, t)
    t = re.sub(r"[^a-z0-9' -]+", " ", t).replace(" - ", " ")
    return [w.strip("'-") for w in t.split() if w.strip("'-")]


def _strip_start(words: list[str], table: list[list[str]]) -> tuple[list[str], str]:
    for p in table:
        if words[: len(p)] == p and len(words) > len(p):
            return words[len(p) :], " ".join(p)
    return words, ""


def normalize(text: str) -> Normalized:
    """Speech-like text -> the words the parser reads (see the module docstring)."""
    words = words_of(text)
    changed = True
    while changed and words:
        words, hit = _strip_start(words, _POLITE_START_W)
        changed = bool(hit)
    changed = True
    while changed and words:
        changed = False
        for p in _POLITE_END_W:
            if len(words) > len(p) and words[-len(p) :] == p:
                words, changed = words[: -len(p)], True
                break
    words, nav = _strip_start(words, _NAV_W)
    lead = nav
    if not nav:
        words, lead = _strip_start(words, _LOOK_W)
        if lead:  # "find me the mug", "show me the mug please"
            words, _ = _strip_start(words, _POLITE_START_W)
    clause = rewrite_relative_clause(words)
    return Normalized(tuple(clause if clause is not None else words), bool(nav), lead, clause is not None)
