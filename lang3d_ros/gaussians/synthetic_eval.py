"""Train language Gaussians on one synthetic scene and score LERF localization on its held-out views.

The path of issue 6's check, shared by benchmarks/gaussians_training.py and the CI test: render a synthetic scene
(orbit trajectory), ground-truth-labels semantics (MiniLM text encoder), per-scene autoencoder, RGB Gaussians
from back-projected training frames, RGB steps, language steps, the coverage gate, and LERF verdicts on the
held-out frames (``lang3d_ros.gaussians.evaluation``) from the Gaussians or from the oracle.
Cannot: run on real data (needs the synthetic ground truth); densification never triggers on short schedules
(``GaussianConfig.densify_from``), so the geometry is the initial points moved by the RGB steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lang3d_ros.gaussians.evaluation import ViewQuery, gaussian_view_queries, oracle_view_queries


@dataclass
class SyntheticSceneSettings:
    """One synthetic scene's schedule (defaults: the benchmark in docs/BENCHMARKS.md, Language Gaussians)."""

    frames: int = 32
    holdout_every: int = 2  # every k-th frame is held out, the rest train
    width_px: int = 160
    height_px: int = 120
    n_objects: int = 8
    rgb_iters: int = 300
    lang_iters: int = 1000
    autoencoder_steps: int = 400
    init_stride_px: int = 4  # back-projection stride of the initial points (every 2nd training frame)
    device: str = "cpu"

    def validate(self) -> None:
        if self.frames < 2 or self.holdout_every < 2:
            raise ValueError(f"need >= 2 frames and holdout_every >= 2, got {self.frames}, {self.holdout_every}")
        if min(self.width_px, self.height_px, self.n_objects, self.init_stride_px) <= 0:
            raise ValueError("width_px, height_px, n_objects and init_stride_px must be positive")
        if min(self.rgb_iters, self.lang_iters, self.autoencoder_steps) < 0:
            raise ValueError("iteration counts must be >= 0")


@dataclass
class TrainedSyntheticScene:
    """A trained scene: model, its text side, held-out frames / keyframes, and what training measured."""

    seed: int
    config: object  # Lang3DConfig
    model: object  # GaussianModel
    autoencoder: object  # SceneAutoencoder
    semantics: object  # semantics backend (text encoder, instance labels)
    held_frames: list
    held_keyframes: list
    coverage: torch.Tensor  # (N, L) mask-supervised share per Gaussian and level
    stats: dict = field(default_factory=dict)  # rgb_s, lang_s, psnr_before/after_db, latent_l1_before/after
    train_frames: list = field(default_factory=list)  # the training frames (labelled points for instance codes)

    def latents(self) -> torch.Tensor:
        """(N, L, d) latents as queries read them (unit-normalised when the config says so)."""
        g = self.config.gaussians
        return (self.model.unit_latents() if g.normalize_latents else self.model.params["latents"]).detach()


def train_synthetic_scene(seed: int, settings: SyntheticSceneSettings | None = None) -> TrainedSyntheticScene:
    """Generate, render, and train scene ``seed`` (torch's thread count is the caller's choice)."""
    from lang3d_ros.config import Lang3DConfig
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.gaussians.model import GaussianModel
    from lang3d_ros.gaussians.training import (
        GaussianOptimizer,
        evaluate_psnr,
        language_coverage,
        make_keyframe,
        scene_extent,
    )
    from lang3d_ros.gaussians.worker import points_from_frame
    from lang3d_ros.mapping.build import ground_truth_tables
    from lang3d_ros.semantics.autoencoder import SceneAutoencoder
    from lang3d_ros.semantics.backends import build_semantics_backend

    s = settings or SyntheticSceneSettings()
    s.validate()
    cfg = Lang3DConfig()
    cfg.gaussians.device = s.device
    cfg.gaussians.downscale = 1
    cfg.semantics.backend, cfg.semantics.gt_text_encoder = "ground_truth", "minilm"
    scene = generate_scene(seed, n_objects=s.n_objects)
    frames = list(
        render_frames(
            scene,
            make_trajectory(scene, "orbit", s.frames, seed=seed),
            DEFAULT_INTRINSICS.scaled(s.width_px, s.height_px),
            seed=seed,
        )
    )
    k = s.holdout_every
    train, held = [f for i, f in enumerate(frames) if i % k], [f for i, f in enumerate(frames) if not i % k]
    sem = build_semantics_backend(cfg.semantics, **ground_truth_tables(scene))
    ae = SceneAutoencoder(sem.feature_dim, cfg.semantics.autoencoder, device="cpu")
    sems = {id(f): sem.process(f) for f in frames}
    for r in sems.values():
        ae.add_features(torch.as_tensor(np.concatenate([lv.features for lv in r.levels if lv.num_masks])))
    ae.train_steps(s.autoencoder_steps)
    enc = lambda x: ae.encode(torch.as_tensor(x)).detach()  # noqa: E731
    kf_train = [make_keyframe(f, 1, s.device, sems[id(f)], enc) for f in train]
    kf_held = [make_keyframe(f, 1, s.device, sems[id(f)], enc) for f in held]
    pts, cols = zip(*(points_from_frame(f, stride=s.init_stride_px) for f in train[::2]))
    model = GaussianModel.from_points(np.concatenate(pts), np.concatenate(cols) / 255.0, device=s.device)
    opt = GaussianOptimizer(model, cfg.gaussians, extent=scene_extent(model, kf_train))
    rng = np.random.default_rng(0)
    stats = {"psnr_before_db": evaluate_psnr(model, kf_held, cfg.gaussians)}
    t0 = time.perf_counter()
    for _ in range(s.rgb_iters):
        opt.rgb_step(kf_train[rng.integers(len(kf_train))])
    stats["rgb_s"] = time.perf_counter() - t0
    stats["psnr_after_db"] = evaluate_psnr(model, kf_held, cfg.gaussians)
    stats["latent_l1_before"] = held_latent_l1(model, kf_held, cfg.gaussians)
    t0 = time.perf_counter()
    for _ in range(s.lang_iters):
        opt.language_step(kf_train[rng.integers(len(kf_train))])
    stats["lang_s"] = time.perf_counter() - t0
    stats["latent_l1_after"] = held_latent_l1(model, kf_held, cfg.gaussians)
    cov = language_coverage(model, kf_train, cfg.gaussians)
    return TrainedSyntheticScene(seed, cfg, model, ae, sem, held, kf_held, cov, stats, train)


@torch.no_grad()
def held_latent_l1(model, keyframes: list, config) -> float:
    """Mean L1 between rendered and target latents on the masked pixels of ``keyframes``."""
    errs = []
    for k in keyframes:
        out = model.render_latents(k.viewmat[None], k.K[None], k.width, k.height, config)
        img = out.image[0].reshape(k.height, k.width, 3, -1).permute(2, 0, 1, 3)
        errs.append(float((img - k.lang_target).abs().mean(-1)[k.lang_mask].mean()))
    return float(np.mean(errs))


def query_engine(scene: TrainedSyntheticScene, gated: bool = True):
    """LanguageQueryEngine on the scene's latents; ``gated``: coverage gate and latent-norm weight as configured,
    else neither."""
    from lang3d_ros.gaussians.query import LanguageQueryEngine

    g = scene.config.gaussians
    kw = (
        dict(
            coverage=scene.coverage, min_coverage=g.min_language_coverage, weight_by_latent_norm=g.weight_by_latent_norm
        )
        if gated
        else dict(coverage=None, weight_by_latent_norm=False)
    )
    return LanguageQueryEngine(
        scene.latents(),
        lambda z: scene.autoencoder.decode(z),
        scene.semantics.text_encoder,
        codebook_size=0,
        device=g.device,
        **kw,
    )


def gaussian_localization(
    scene: TrainedSyntheticScene, gated: bool = True, latent_permutation: torch.Tensor | None = None
) -> list[ViewQuery]:
    """LERF verdicts on the held-out views from maps rendered with ``query_engine(scene, gated)``.
    ``latent_permutation`` (N,) int: Gaussian i renders the latents of Gaussian perm[i] (geometry and coverage
    stay); the model's latents are swapped for the call and restored after."""
    model = scene.model
    trained = model.params["latents"]
    if latent_permutation is not None:
        perm = torch.as_tensor(latent_permutation, dtype=torch.long, device=trained.device)
        if perm.shape != (trained.shape[0],) or not torch.equal(
            perm.sort().values, torch.arange(trained.shape[0], device=perm.device)
        ):
            raise ValueError(f"latent_permutation must be a permutation of {trained.shape[0]} Gaussians")
        model.params["latents"] = trained.detach()[perm]
    try:
        engine = query_engine(scene, gated)
        return gaussian_view_queries(
            engine,
            model,
            scene.held_frames,
            scene.held_keyframes,
            scene.semantics.instance_labels,
            scene.config.gaussians,
        )
    finally:
        model.params["latents"] = trained


def oracle_localization(scene: TrainedSyntheticScene) -> list[ViewQuery]:
    """LERF verdicts on the held-out views' own autoencoded mask latents (no Gaussians)."""
    return oracle_view_queries(
        query_engine(scene, gated=False), scene.held_frames, scene.held_keyframes, scene.semantics.instance_labels
    )


def shuffle_permutation(n_gaussians: int, seed: int = 0) -> torch.Tensor:
    """(N,) random permutation of the Gaussians: the latent-shuffling control that must break localization."""
    return torch.randperm(n_gaussians, generator=torch.Generator().manual_seed(seed))


@dataclass
class SegmentTable:
    """Ground-truth stand-in for the fused map's instance table, from a synthetic scene's labelled points: segment
    ids (S,) (the GT instance ids), per level the unit language feature (L, S, D) of each segment (its label's
    embedding; the whole level uses the root object's label), and the labelled points (M, 3) with their segment id
    per level (M, L) (back-projected training pixels, every ``stride``-th)."""

    ids: np.ndarray
    features: torch.Tensor
    points_xyz: np.ndarray
    labels: np.ndarray

    def relevancy(self, text: str, text_encoder, canonical: torch.Tensor) -> np.ndarray:
        """(L, S) LERF canonical relevancy of every segment to ``text``."""
        from lang3d_ros.grounding.relevancy import relevancy

        q = torch.nn.functional.normalize(text_encoder.encode_text([text])[0].float(), dim=-1)
        return np.stack(
            [relevancy(self.features[lvl], q, canonical).cpu().numpy() for lvl in range(self.features.shape[0])]
        ).astype(np.float32)


def segment_table(scene: TrainedSyntheticScene, stride: int = 2) -> SegmentTable:
    """The scene's GT segment table (see ``SegmentTable``) from its training frames."""
    from lang3d_ros.geometry.transforms import transform_points

    sem = scene.semantics
    ids = np.array(sorted(sem.instance_labels), dtype=np.int64)
    pts, labs = [], []
    for f in scene.train_frames:
        v, u = np.mgrid[0 : f.height : stride, 0 : f.width : stride]
        z = f.depth_m[v, u]
        ok = np.isfinite(z) & (z > 0)
        pts.append(transform_points(f.T_world_cam, f.intrinsics.backproject(u[ok], v[ok], z[ok])).astype(np.float32))
        inst = f.instance_map[v[ok], u[ok]].astype(np.int64)
        known = np.isin(inst, ids)
        lab = np.where(known, inst, -1)
        root = np.array([sem.root.get(int(i), -1) if k else -1 for i, k in zip(inst, known)], dtype=np.int64)
        labs.append(np.stack([lab, lab, root], axis=1))
    feats = []
    for lvl in range(3):
        texts = [sem.text_of(int(i) if lvl < 2 else int(sem.root[int(i)])) for i in ids]
        feats.append(torch.nn.functional.normalize(torch.from_numpy(sem.embed_texts(texts)).float(), dim=-1))
    return SegmentTable(ids, torch.stack(feats), np.concatenate(pts), np.concatenate(labs).astype(np.int32))
