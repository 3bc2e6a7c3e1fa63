"""3D-LLM parameters: backend, limits, location-token grid, relation thresholds."""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from typing import Literal

Backend = Literal["smollm2", "transformers", "openai"]
Mode = Literal["auto", "rank", "llm_first", "parser_only"]
BACKENDS = typing.get_args(Backend)
MODES = typing.get_args(Mode)


def default_cache_dir() -> str:
    """``$LANG3D_LLM_CACHE`` or ``~/.cache/lang3d/smollm2``: where the converted SmolLM2 is kept."""
    return os.environ.get("LANG3D_LLM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "lang3d", "smollm2"))


@dataclass
class LLMConfig:
    backend: Backend = "smollm2"
    """Smollm2 | transformers | openai."""
    model_path: str = ""
    """Transformers: local folder; openai: the served model name."""
    cache_dir: str = ""
    """Smollm2 conversion cache; empty -> default_cache_dir()."""
    endpoint: str = "http://127.0.0.1:8000/v1"
    """Openai: base URL, POST {endpoint}/chat/completions."""
    api_key_env: str = ""
    """Openai: name of the environment variable holding the key (never the key itself)."""
    timeout_s: float = 20.0
    """Longest a model call may take before the parser's answer is used."""
    max_new_tokens: int = 64
    """Hard cap on what one request may ask for."""
    max_output_chars: int = 2000
    """Model output beyond this is cut before parsing."""
    max_query_chars: int = 1024
    """Longer queries are rejected with ValueError."""
    mode: Mode = "auto"
    """auto (default): llm_first when the model carries a verified trained adapter (``adapter``), else rank. With the
    shipped adapter the model answers 81% of the frozen phrasing set itself, 96.2% right overall, p50 0.34 s
    (docs/BENCHMARKS.md) | rank: the parser and the label matcher propose candidate requests, the model ranks them by
    log-likelihood and fills the slots they leave open | llm_first: the model writes the request under a JSON-schema
    grammar, the parser answers when that request fails the checks against the query | parser_only: no model."""
    adapter: str = "builtin"
    """Smollm2 backend: the LoRA request adapter to load. builtin: the one shipped in the package
    (lang3d_ros/llm/adapters/requests-smollm2) | a folder path | "" for none. Its manifest's SHA-256 checksums
    are verified first: a tampered adapter is refused and, like a missing one, leaves the plain model (mode auto
    then ranks with the parser instead of letting the model write requests)."""
    device: str = "cpu"
    """Cpu | cuda | auto (transformers backends)."""
    loc_bins: int = 256
    """Location tokens per axis."""
    loc_range_m: list[float] = field(default_factory=list)
    """[xmin, ymin, zmin, xmax, ymax, zmax]; empty -> scene bounds."""
    near_m: float = 1.0
    """"near": gap between boxes below this."""
    on_tolerance_m: float = 0.08
    """"on": |bottom of A - top of B| below this."""
    text_match_threshold: float = 0.8
    """Cosine similarity for embedding label matches."""
    bind_threshold: float = 0.6
    """A query noun no rule matches names the map label the text encoder finds most similar when the cosine
    similarity is at least this (MiniLM: 'couch'/'sofa' 0.86, 'display'/'monitor' 0.61, 'piano'/'keyboard' 0.59)."""
    bind_margin: float = 0.03
    """... and when it beats the second most similar label by this much; otherwise the model ranks the labels."""
    open_threshold: float = 0.45
    """Below this similarity to every map label a noun names nothing in the map (NOT_FOUND); between this and
    bind_threshold the label is an open slot that only the model may fill."""
    rank_temperature: float = 0.05
    """Ranking open labels: the model's mean log-likelihood of a label is added to its encoder similarity divided
    by this (SayCan's language score x grounding score); smaller trusts the encoder more. Chosen a priori (a
    0.05 similarity gap weighs one nat), not tuned on the phrasing set."""
    few_shot: int = 4
    """Worked examples in the model's prompt, retrieved per query from the example pool (balanced by intent)."""
    max_candidates: int = 6
    """At most this many candidate requests are ranked by the model."""
    standoff_m: float = 0.6
    """Task steps: goal distance from the object's box."""

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.timeout_s <= 0 or self.max_new_tokens <= 0 or self.max_output_chars <= 0 or self.max_query_chars <= 0:
            raise ValueError("timeout_s, max_new_tokens, max_output_chars and max_query_chars must be positive")
        if not 2 <= self.loc_bins <= 4096:
            raise ValueError(f"loc_bins must be in [2, 4096], got {self.loc_bins}")
        if self.loc_range_m and (
            len(self.loc_range_m) != 6 or any(self.loc_range_m[i] >= self.loc_range_m[i + 3] for i in range(3))
        ):
            raise ValueError(
                f"loc_range_m must be [xmin, ymin, zmin, xmax, ymax, zmax] with min < max, got {self.loc_range_m}"
            )
        if not 0 < self.open_threshold <= self.bind_threshold <= 1 or not 0 <= self.bind_margin < 1:
            raise ValueError("need 0 < open_threshold <= bind_threshold <= 1 and 0 <= bind_margin < 1")
        if self.rank_temperature <= 0:
            raise ValueError("rank_temperature must be positive")
        if not 0 <= self.few_shot <= 16 or not 1 <= self.max_candidates <= 32:
            raise ValueError("few_shot must be in [0, 16] and max_candidates in [1, 32]")
        if self.near_m <= 0 or self.on_tolerance_m <= 0 or self.standoff_m < 0:
            raise ValueError("near_m and on_tolerance_m must be positive, standoff_m non-negative")
        if not 0 < self.text_match_threshold <= 1:
            raise ValueError("text_match_threshold must be in (0, 1]")
