"""Matching a query noun to object labels: exact, synonym, plural, head noun, and (when a text
encoder is given) embedding similarity.

The synonym table is small and English only; words it does not know match only exactly or
through the encoder.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

SYNONYMS: dict[str, str] = {
    "couch": "sofa",
    "settee": "sofa",
    "tv": "television",
    "telly": "television",
    "monitor": "screen",
    "bin": "trash can",
    "dustbin": "trash can",
    "garbage can": "trash can",
    "wastebasket": "trash can",
    "fridge": "refrigerator",
    "desk lamp": "lamp",
    "plant": "potted plant",
    "laptop computer": "laptop",
    "bookcase": "bookshelf",
    "shelf": "bookshelf",
    "cupboard": "cabinet",
    "closet": "wardrobe",
    "couch table": "coffee table",
    "carton": "box",
    "pillow": "cushion",
    "rug": "carpet",
    "doorway": "door",
    "trash bin": "trash can",
    "rubbish bin": "trash can",
    "garbage bin": "trash can",
    "waste bin": "trash can",
    "trashcan": "trash can",
    "tv set": "television",
    "cell phone": "phone",
    "mobile phone": "phone",
}
_IRREGULAR = {
    "shelves": "shelf",
    "people": "person",
    "knives": "knife",
    "mice": "mouse",
    "boxes": "box",
    "glasses": "glass",
    "benches": "bench",
    "couches": "couch",
    "dishes": "dish",
    "watches": "watch",
}
_NO_SINGULAR = {
    "glass",
    "bus",
    "grass",
    "dress",
    "class",
    "chess",
    "lens",
    "news",
    "series",
    "species",
    "lotus",
    "cactus",
    "basin",
    "canvas",
}


class TextEncoder(Protocol):
    def encode_text(self, texts: list[str]):  # -> (N, D) unit-norm torch tensor
        ...


def singular(word: str) -> str:
    """English singular of one word by simple rules ("chairs" -> "chair", "shelves" -> "shelf")."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if w in _SINGULAR_OF:
        return _SINGULAR_OF[w]
    if w in _NO_SINGULAR or len(w) <= 3 or w.endswith("ss") or w.endswith("us"):
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "sses")):
        return w[:-2]
    if w.endswith("s"):
        return w[:-1]
    return w


_PLURAL_IRREGULAR = {
    **{one: many for many, one in _IRREGULAR.items()},
    "leaf": "leaves",
    "loaf": "loaves",
    "scarf": "scarves",
    "half": "halves",
    "wife": "wives",
    "life": "lives",
    "wolf": "wolves",
    "foot": "feet",
    "tooth": "teeth",
    "child": "children",
    "potato": "potatoes",
    "tomato": "tomatoes",
    "cactus": "cacti",
    "bus": "buses",
    "lens": "lenses",
}
_SINGULAR_OF = {many: one for one, many in _PLURAL_IRREGULAR.items()}


def plural(label: str) -> str:
    """English plural of a label, its last word inflected ("toy car" -> "toy cars", "shelf" -> "shelves",
    "box" -> "boxes", "battery" -> "batteries"); the one rule for answers and generated queries. Irregular nouns
    outside the table get the regular rule."""
    words = label.split(" ")
    w = words[-1]
    low = w.lower()
    if low in _PLURAL_IRREGULAR:
        out = _PLURAL_IRREGULAR[low]
    elif low in ("series", "species", "news"):
        out = low
    elif low.endswith(("s", "x", "z", "ch", "sh")):
        out = low + "es"
    elif low.endswith("y") and low[-2:-1] not in ("a", "e", "i", "o", "u"):
        out = low[:-1] + "ies"
    else:
        out = low + "s"
    if w[:1].isupper():
        out = out[:1].upper() + out[1:]
    return " ".join(words[:-1] + [out])


def normalize_label(text: str) -> str:
    """Lower case, single spaces, articles dropped, last word singular, underscores as spaces."""
    words = [w for w in text.lower().replace("_", " ").replace("-", " ").split() if w not in ("the", "a", "an")]
    if not words:
        return ""
    words[-1] = singular(words[-1])
    return " ".join(words)


def canonical(text: str) -> str:
    """normalize_label then the synonym table ("couches" -> "sofa")."""
    n = normalize_label(text)
    return SYNONYMS.get(n, n)


def label_similarity(query: str, label: str) -> float:
    """1.0 exact/synonym/plural match; 0.7 when one is the other's head noun ("table" vs
    "coffee table") or the query is a closed compound ending in the label ("houseplant" vs "plant"); 0.0
    otherwise. ``query == ""`` (any object) gives 1.0."""
    if not query:
        return 1.0
    q, l = canonical(query), canonical(label)
    if q == l or normalize_label(query) == normalize_label(label):
        return 1.0
    qw, lw = q.split(), l.split()
    if qw and lw and (qw[-1] == lw[-1] or canonical(qw[-1]) == canonical(lw[-1])):
        return 0.7
    raw = normalize_label(query).split()
    if raw and lw and any(_compound_head(raw[-1], h) for h in {lw[-1], normalize_label(label).split()[-1]}):
        return 0.7
    return 0.0


def _compound_head(word: str, head: str) -> bool:
    """``word`` is a closed compound whose head (last part, in English) is ``head``: "houseplant" -> "plant",
    "footstool" -> "stool", "armchair" -> "chair" (a head of 4+ letters after 3+ letters)."""
    return " " not in word and len(head) >= 4 and len(word) >= len(head) + 3 and word.endswith(head)


@dataclass(frozen=True)
class LabelChoice:
    """One map label a query noun may name."""

    label: str
    score: float
    """Rule score (1.0 exact / synonym / plural, 0.7 head noun) or the encoder's cosine similarity."""
    how: str
    """"rule" or "encoder"."""


class LabelMatcher:
    """Scores a query noun against labels; embedding similarities are cached per (query, label)."""

    def __init__(self, encoder: TextEncoder | None = None, threshold: float = 0.8) -> None:
        self.encoder = encoder
        self.threshold = float(threshold)
        self._cache: dict[str, np.ndarray] = {}

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            emb = self.encoder.encode_text(list(missing))
            emb = np.asarray(emb.detach().cpu().float().numpy() if hasattr(emb, "detach") else emb, dtype=np.float64)
            if emb.ndim != 2 or emb.shape[0] != len(missing):
                raise ValueError(f"encode_text returned shape {emb.shape} for {len(missing)} texts")
            for t, e in zip(missing, emb):
                self._cache[t] = e / max(np.linalg.norm(e), 1e-12)
        return np.stack([self._cache[t] for t in texts])

    def score(self, query: str, labels: Sequence[str]) -> np.ndarray:
        """(N,) match scores in [0, 1] of ``query`` against each label; 0 = no match."""
        s = np.array([label_similarity(query, l) for l in labels], dtype=np.float64)
        if self.encoder is not None and query and len(labels) and np.any(s < 1.0):
            q = self._embed([canonical(query)])[0]
            e = self._embed([canonical(l) for l in labels])
            sim = e @ q
            s = np.maximum(s, np.where(sim >= self.threshold, sim * 0.95, 0.0))
        return s

    def similarity(self, query: str, labels: Sequence[str]) -> np.ndarray:
        """(N,) raw similarity of ``query`` to each label: the encoder's cosine when there is an encoder, else a
        character-sequence ratio (which knows no synonyms)."""
        if not len(labels):
            return np.zeros(0)
        if self.encoder is not None:
            return self._embed([canonical(l) for l in labels]) @ self._embed([canonical(query)])[0]
        q = canonical(query)
        return np.array([difflib.SequenceMatcher(None, q, canonical(l)).ratio() for l in labels])

    def choices(self, query: str, labels: Sequence[str]) -> list[LabelChoice]:
        """Distinct labels ranked for ``query``: rule matches first (best tier only), else every label by the
        encoder's similarity, best first. Scores are not thresholded here (see ``understand.bind_label``)."""
        uniq = list(dict.fromkeys(labels))
        rules = np.array([label_similarity(query, l) for l in uniq])
        if len(uniq) and rules.max() > 0:
            return [LabelChoice(l, float(r), "rule") for l, r in zip(uniq, rules) if r >= rules.max()]
        sims = self.similarity(query, uniq)
        order = np.argsort(-sims)
        return [
            LabelChoice(uniq[i], float(sims[i]), "encoder" if self.encoder is not None else "spelling") for i in order
        ]
