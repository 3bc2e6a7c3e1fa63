"""LangSplat's per-scene autoencoder (D -> 256-128-64-32-3 -> 16-32-64-128-256-256 -> D), trained online.

Keyframes add their mask features to a bounded replay buffer (``add_features``); ``train_steps(n)`` runs n Adam
steps on random batches of it, loss = MSE + w * (1 - cosine) (LangSplat: w = 1e-3). The 3-d latent and the
reconstruction are L2-normalised, as in LangSplat. It only knows features it has been fed: features of a new
scene need training first (``reconstruction_report`` tells how well it does on given features).
"""

from __future__ import annotations

import logging
import threading

import torch
import torch.nn.functional as F
from torch import nn

from lang3d_ros.device import resolve_device
from lang3d_ros.semantics.config import AutoencoderConfig

logger = logging.getLogger(__name__)


class _Autoencoder(nn.Module):
    def __init__(self, input_dim: int, encoder_dims: list[int], decoder_dims: list[int]) -> None:
        super().__init__()
        enc: list[nn.Module] = [nn.Linear(input_dim, encoder_dims[0])]
        for a, b in zip(encoder_dims[:-1], encoder_dims[1:]):
            enc += [nn.BatchNorm1d(a), nn.ReLU(), nn.Linear(a, b)]
        dims = list(decoder_dims[:-1]) + [input_dim]  # last decoder size follows the input size
        dec: list[nn.Module] = [nn.Linear(encoder_dims[-1], dims[0])]
        for a, b in zip(dims[:-1], dims[1:]):
            dec += [nn.ReLU(), nn.Linear(a, b)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(x), dim=-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.decoder(z), dim=-1)


class SceneAutoencoder:
    """Incrementally trained per-scene autoencoder. ``encode``: (N, D) -> (N, latent); ``decode``: (N, latent)
    -> (N, D).

    The replay buffer keeps the first ``buffer_size`` rows, then replaces random rows (reservoir sampling), so
    old keyframes keep a fair share. Deterministic given ``seed``.
    """

    def __init__(
        self,
        input_dim: int = 512,
        config: AutoencoderConfig | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
    ) -> None:
        self.config = config if config is not None else AutoencoderConfig()
        self.config.validate()
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        self.input_dim = input_dim
        self.latent_dim = int(self.config.encoder_dims[-1])
        self.device = resolve_device(device)
        self._gen = torch.Generator(device="cpu").manual_seed(seed)
        torch.manual_seed(seed)
        self.model = _Autoencoder(input_dim, list(self.config.encoder_dims), list(self.config.decoder_dims)).to(
            self.device
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.learning_rate)
        self.buffer = torch.zeros((self.config.buffer_size, input_dim), dtype=torch.float32, device=self.device)
        self.num_buffered = 0
        self.num_seen = 0
        self.steps_done = 0
        # the mapping thread trains while the Gaussian trainer and the query threads encode / decode: one lock keeps
        # BatchNorm's train/eval mode and the weights consistent for each call
        self._lock = threading.RLock()

    def _check(self, x: torch.Tensor, dim: int, name: str) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != dim or not x.is_floating_point():
            raise ValueError(f"{name} must be (N, {dim}) float, got {tuple(x.shape)} {x.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf")
        return x.to(self.device, torch.float32)

    def add_features(self, features: torch.Tensor) -> int:
        """Add (N, D) features (rows need not be unit) to the replay buffer; returns the buffered row count."""
        x = self._check(features, self.input_dim, "features")
        x = F.normalize(x, dim=-1)
        cap = self.config.buffer_size
        free = max(0, cap - self.num_buffered)
        head, tail = x[:free], x[free:]
        self.buffer[self.num_buffered : self.num_buffered + head.shape[0]] = head
        self.num_buffered += head.shape[0]
        if tail.shape[0]:  # reservoir sampling: row k (0-based count k) lands with probability cap / (k + 1)
            seen = self.num_seen + head.shape[0] + torch.arange(tail.shape[0])
            slots = (torch.rand(tail.shape[0], generator=self._gen) * (seen + 1).float()).long()
            hit = slots < cap
            self.buffer[slots[hit].to(self.device)] = tail[hit.to(self.device)]
        self.num_seen += x.shape[0]
        return self.num_buffered

    def train_steps(self, n: int | None = None) -> float:
        """Run ``n`` (default ``steps_per_keyframe``) Adam steps on buffer batches; returns the last loss."""
        n = self.config.steps_per_keyframe if n is None else n
        if n < 0:
            raise ValueError(f"steps must be >= 0, got {n}")
        if self.num_buffered < 2:
            raise ValueError("need at least 2 buffered features before training (call add_features first)")
        with self._lock:
            return self._train_steps(n)

    def _train_steps(self, n: int) -> float:
        self.model.train()
        bs = min(self.config.batch_size, self.num_buffered)
        loss = torch.zeros(())
        for _ in range(n):
            idx = torch.randint(0, self.num_buffered, (bs,), generator=self._gen).to(self.device)
            x = self.buffer[idx]
            y = self.model.decode(self.model.encode(x))
            loss = F.mse_loss(y, x) + self.config.cosine_weight * (1.0 - F.cosine_similarity(y, x, dim=-1).mean())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.steps_done += n
        self.model.eval()
        return float(loss.detach())

    @torch.no_grad()
    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, latent) unit rows. Thread-safe against training."""
        x = self._check(features, self.input_dim, "features")
        with self._lock:
            self.model.eval()
            return self.model.encode(x)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, D) unit rows (any leading shape flattened by the caller). Thread-safe against training."""
        z = self._check(latent, self.latent_dim, "latent")
        with self._lock:
            self.model.eval()
            return self.model.decode(z)

    @torch.no_grad()
    def reconstruction_report(self, features: torch.Tensor) -> dict[str, float]:
        """Cosine between (N, D) features and their reconstructions: mean, min, and the count."""
        x = F.normalize(self._check(features, self.input_dim, "features"), dim=-1)
        if x.shape[0] == 0:
            raise ValueError("reconstruction_report needs at least one feature row")
        cos = F.cosine_similarity(self.decode(self.encode(x)), x, dim=-1)
        return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "num_features": int(x.shape[0])}

    def state_dict(self) -> dict:
        """Weights, optimiser, sizes and counters (not the replay buffer)."""
        return {
            "input_dim": self.input_dim,
            "encoder_dims": list(self.config.encoder_dims),
            "decoder_dims": list(self.config.decoder_dims),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "steps_done": self.steps_done,
        }

    def load_state_dict(self, state: dict) -> None:
        """Load ``state_dict()`` output; ValueError (nothing changed) when the sizes differ."""
        for key in ("input_dim", "encoder_dims", "decoder_dims", "model"):
            if key not in state:
                raise ValueError(f"autoencoder state lacks {key!r}")
        mine = (self.input_dim, list(self.config.encoder_dims), list(self.config.decoder_dims))
        theirs = (state["input_dim"], list(state["encoder_dims"]), list(state["decoder_dims"]))
        if mine != theirs:
            raise ValueError(f"autoencoder sizes differ: this {mine}, state {theirs}")
        self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.steps_done = int(state.get("steps_done", 0))
        self.model.eval()
