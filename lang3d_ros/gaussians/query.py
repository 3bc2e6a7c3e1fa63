"""Open-vocabulary queries on language Gaussians, in 3D (per Gaussian) and in 2D (rendered relevancy maps).

A query: text -> unit embedding q (D,); each level's latents (N, d) -> decoder -> unit features (N, D) ->
LERF relevancy against the canonical phrases; the level with the highest maximum relevancy wins (LangSplat).
Decoding every Gaussian per query is what makes LangSplat slow, so ``LanguageQueryEngine`` clusters each
level's latents into a k-means codebook once (K codes, torch), decodes the K codes once, and per query
computes relevancy for K codes and gathers it per Gaussian (cost O(L K D + L N)). ``exact=True`` decodes
every Gaussian (the reference); ``codebook_error`` measures the difference.
Two weights keep latents the training never pinned down from answering: ``coverage`` (N, L) (from
``training.language_coverage``) gates out Gaussians (and rendered pixels) that masks supervise less than
``min_coverage`` (the fused map's "points no mask covered score 0"; the ground-truth semantics leave floor and walls
unlabelled, and a zero latent decodes to an arbitrary feature), and ``weight_by_latent_norm`` multiplies relevancy by
min(|latent|, 1): the autoencoder's latents are unit vectors, so a short (rendered) latent is a blend of Gaussians
that disagree, and the decoder has never seen one.
Cannot: re-cluster incrementally (rebuild the engine after latents change); the decoder must already live
on the engine's device.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F

from lang3d_ros.device import resolve_device
from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.grounding.objects import LEVELS
from lang3d_ros.grounding.relevancy import DEFAULT_TEMPERATURE, relevancy

log = logging.getLogger(__name__)
CANONICAL_PHRASES = ("object", "things", "stuff", "texture")
Decoder = Callable[[torch.Tensor], torch.Tensor]  # (M, d) latents -> (M, D) features


class TextEncoder(Protocol):
    def encode_text(self, texts: list[str]) -> torch.Tensor: ...  # (N, D) unit rows


def kmeans(
    x: torch.Tensor, k: int, iterations: int = 20, seed: int = 0, chunk: int = 1 << 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means. x (N, d) -> (centers (K, d), assign (N,) int64), K = min(k, N).

    Initialised from K distinct random rows; an empty cluster is re-seeded with the worst-fit point.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty (N, d) tensor, got {tuple(x.shape)}")
    if k <= 0 or iterations <= 0:
        raise ValueError(f"k and iterations must be positive, got {k}, {iterations}")
    n = x.shape[0]
    k = min(k, n)
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = x.detach().float()
    centers = x[torch.randperm(n, generator=g)[:k].to(x.device)].clone()
    assign = torch.empty(n, dtype=torch.long, device=x.device)
    best = torch.empty(n, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        for s in range(0, n, chunk):
            d = torch.cdist(x[s : s + chunk], centers)
            best[s : s + chunk], assign[s : s + chunk] = d.min(dim=1)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp(min=1)[:, None])
        if bool(empty.any()):
            worst = torch.topk(best, int(empty.sum())).indices
            centers[empty] = x[worst]
    for s in range(0, n, chunk):
        assign[s : s + chunk] = torch.cdist(x[s : s + chunk], centers).argmin(dim=1)
    return centers, assign


@dataclass
class QueryResult:
    """relevancy (N,) at the chosen level; level index into LEVELS; per_level (L, N); max_per_level (L,)."""

    relevancy: torch.Tensor
    level: int
    per_level: torch.Tensor
    max_per_level: torch.Tensor
    latency_ms: float

    @property
    def level_name(self) -> str:
        return LEVELS[self.level]


class LanguageQueryEngine:
    """Answers text queries over N Gaussians' latents (N, L, d); build once after language training."""

    def __init__(
        self,
        latents: torch.Tensor,
        decoder: Decoder,
        text_encoder: TextEncoder,
        canonical_phrases: Sequence[str] = CANONICAL_PHRASES,
        codebook_size: int = 512,
        kmeans_iterations: int = 20,
        device: str | torch.device = "auto",
        valid: torch.Tensor | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        chunk: int = 1 << 16,
        coverage: torch.Tensor | None = None,
        min_coverage: float = GaussianConfig.min_language_coverage,
        weight_by_latent_norm: bool = GaussianConfig.weight_by_latent_norm,
    ):
        if latents.ndim != 3 or latents.shape[0] == 0:
            raise ValueError(f"latents must be (N > 0, L, d), got {tuple(latents.shape)}")
        if not canonical_phrases:
            raise ValueError("need at least one canonical phrase")
        if valid is not None and tuple(valid.shape) != (latents.shape[0],):
            raise ValueError(f"valid must be ({latents.shape[0]},) bool, got {tuple(valid.shape)}")
        if coverage is not None and tuple(coverage.shape) != tuple(latents.shape[:2]):
            raise ValueError(f"coverage must be ({latents.shape[0]}, {latents.shape[1]}), got {tuple(coverage.shape)}")
        if not 0 <= min_coverage <= 1:
            raise ValueError(f"min_coverage must be in [0, 1], got {min_coverage}")
        self.device = resolve_device(device)
        self.latents = latents.detach().float().to(self.device)
        self.decoder = decoder
        self.text_encoder = text_encoder
        self.temperature = temperature
        self.chunk = chunk
        self.valid = None if valid is None else valid.to(self.device, torch.bool)
        self.min_coverage = float(min_coverage)
        self.weight_by_latent_norm = bool(weight_by_latent_norm)
        # (N, L) 0/1 per Gaussian and level: enough of it is mask-supervised
        self.gate = (
            None if coverage is None else (coverage.detach().float().to(self.device) >= self.min_coverage).float()
        )
        weight = torch.ones(self.latents.shape[:2], device=self.device)
        if self.gate is not None:
            weight = weight * self.gate
        if self.weight_by_latent_norm:
            weight = weight * self.latents.norm(dim=-1).clamp(max=1.0)
        self.weight = weight.T.contiguous()  # (L, N)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.canonical = self._encode(list(canonical_phrases))
        self.centers: torch.Tensor | None = None
        self.assign: torch.Tensor | None = None
        self.code_features: torch.Tensor | None = None
        if codebook_size > 0:
            t0 = time.perf_counter()
            cents, assigns = zip(
                *(
                    kmeans(self.latents[:, lvl], codebook_size, kmeans_iterations, seed=lvl)
                    for lvl in range(self.num_levels)
                )
            )
            self.centers = torch.stack(cents)  # (L, K, d)
            self.assign = torch.stack(assigns).to(torch.int32)  # (L, N)
            self.code_features = torch.stack([self._decode(c) for c in self.centers])  # (L, K, D)
            log.info(
                "codebook: %d levels x %d codes for %d Gaussians in %.2f s",
                self.num_levels,
                self.centers.shape[1],
                self.latents.shape[0],
                time.perf_counter() - t0,
            )

    @property
    def num_levels(self) -> int:
        return int(self.latents.shape[1])

    def _encode(self, texts: list[str]) -> torch.Tensor:
        emb = self.text_encoder.encode_text(texts)
        if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != len(texts):
            raise ValueError(
                f"text encoder must return ({len(texts)}, D) tensor, got {getattr(emb, 'shape', type(emb))}"
            )
        return F.normalize(emb.detach().float().to(self.device), dim=-1)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = [self.decoder(latents[s : s + self.chunk]).float() for s in range(0, latents.shape[0], self.chunk)]
        return F.normalize(torch.cat(out), dim=-1)

    def text_embedding(self, text: str) -> torch.Tensor:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"query must be a non-empty string, got {text!r}")
        if text not in self._text_cache:
            self._text_cache[text] = self._encode([text])[0]
        return self._text_cache[text]

    def relevancy_per_level(self, text: str, exact: bool = False) -> torch.Tensor:
        """(L, N) relevancy of every Gaussian at every level (codebook path unless ``exact``)."""
        q = self.text_embedding(text)
        if exact or self.code_features is None:
            rows = []
            for lvl in range(self.num_levels):
                r = [
                    relevancy(self._decode(self.latents[s : s + self.chunk, lvl]), q, self.canonical, self.temperature)
                    for s in range(0, self.latents.shape[0], self.chunk)
                ]
                rows.append(torch.cat(r))
            rel = torch.stack(rows)
        else:
            per_code = torch.stack([relevancy(f, q, self.canonical, self.temperature) for f in self.code_features])
            rel = torch.gather(per_code, 1, self.assign.long())
        rel = rel * self.weight
        if self.valid is not None:
            rel = rel * self.valid
        return rel

    def query(self, text: str, level: int | None = None, exact: bool = False) -> QueryResult:
        """Relevancy per Gaussian for ``text``; level None picks the level with the highest maximum."""
        if level is not None and not 0 <= level < self.num_levels:
            raise ValueError(f"level must be in 0..{self.num_levels - 1}, got {level}")
        t0 = time.perf_counter()
        per_level = self.relevancy_per_level(text, exact)
        maxima = per_level.max(dim=1).values
        lvl = int(maxima.argmax()) if level is None else level
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        ms = (time.perf_counter() - t0) * 1e3
        return QueryResult(per_level[lvl], lvl, per_level, maxima, ms)

    def codebook_error(self, texts: Sequence[str]) -> dict[str, float]:
        """Codebook vs exact relevancy over ``texts``: max and mean absolute difference, and how often the
        chosen level agrees."""
        if self.code_features is None:
            raise ValueError("engine was built without a codebook (codebook_size=0)")
        diffs, agree = [], 0
        for t in texts:
            a, b = self.relevancy_per_level(t), self.relevancy_per_level(t, exact=True)
            diffs.append((a - b).abs())
            agree += int(a.max(1).values.argmax() == b.max(1).values.argmax())
        d = torch.stack(diffs)
        return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "level_agreement": agree / max(len(texts), 1)}

    def relevancy_map(
        self,
        model,
        viewmat: torch.Tensor,
        K: torch.Tensor,
        width: int,
        height: int,
        text: str,
        config=None,
        smoothing_px: int = 5,
        min_alpha: float = 0.05,
    ) -> tuple[torch.Tensor, int]:
        """2D relevancy for LERF's localization protocol: render all levels' latents from ``viewmat`` (4, 4)
        world -> camera with ``K`` (3, 3), decode per pixel, relevancy, mean filter of ``smoothing_px`` (1: none).
        Pixels count where alpha >= ``min_alpha``, or, with ``coverage``, where the rendered gate >= ``min_coverage``;
        with ``weight_by_latent_norm`` relevancy is multiplied by min(|rendered latent|, 1). ``model`` must hold
        the engine's Gaussians (same N, same order). Returns ((L, H, W) relevancy; best level by maximum)."""
        maps_t = self.relevancy_maps(model, viewmat, K, width, height, [text], config, smoothing_px, min_alpha)[text]
        return maps_t, int(maps_t.flatten(1).max(1).values.argmax())

    def relevancy_maps(
        self,
        model,
        viewmat: torch.Tensor,
        K: torch.Tensor,
        width: int,
        height: int,
        texts: Sequence[str],
        config=None,
        smoothing_px: int = 5,
        min_alpha: float = 0.05,
    ) -> dict[str, torch.Tensor]:
        """``relevancy_map`` for several texts from one render and one decode per level: {text: (L, H, W)}."""
        if smoothing_px <= 0 or smoothing_px % 2 == 0:
            raise ValueError(f"smoothing_px must be odd and positive, got {smoothing_px}")
        if model.num_gaussians != self.latents.shape[0]:
            raise ValueError(f"model has {model.num_gaussians} Gaussians, the engine {self.latents.shape[0]}")
        qs = {t: self.text_embedding(t) for t in texts}
        vm, Km = viewmat[None].to(model.device), K[None].to(model.device)
        with torch.no_grad():
            out = model.render_latents(vm, Km, width, height, config)
            gate = (
                None
                if self.gate is None
                else model.render(self.gate.to(model.device), vm, Km, width, height, config).image[0]
            )
        d = model.latent_dim
        img = out.image[0].to(self.device)  # (H, W, L*d)
        maps: dict[str, list[torch.Tensor]] = {t: [] for t in qs}
        for lvl in range(self.num_levels):
            z = img[..., lvl * d : (lvl + 1) * d].reshape(-1, d)
            feats = self._decode(z)
            if gate is None:
                keep = (out.alpha[0, ..., 0] >= min_alpha).to(self.device).float()
            else:
                keep = (gate[..., lvl] >= self.min_coverage).to(self.device).float()
            if self.weight_by_latent_norm:
                keep = keep * z.norm(dim=-1).clamp(max=1.0).reshape(height, width)
            for t, q in qs.items():
                rel = relevancy(feats, q, self.canonical, self.temperature).reshape(height, width) * keep
                if smoothing_px > 1:
                    rel = F.avg_pool2d(
                        rel[None, None], smoothing_px, stride=1, padding=smoothing_px // 2, count_include_pad=False
                    )[0, 0]
                maps[t].append(rel)
        return {t: torch.stack(m) for t, m in maps.items()}

    def relevancy_of_latents(self, latents: torch.Tensor, text: str) -> torch.Tensor:
        """(M, d) latents -> (M,) relevancy of their decoded features to ``text`` (no gate, no weight)."""
        return relevancy(
            self._decode(latents.to(self.device).float()), self.text_embedding(text), self.canonical, self.temperature
        )
