"""Build the whole mapping stack from one Lang3DConfig (used by the nodes, the CLI and the evaluation)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lang3d_ros.mapping.language_map import LanguageMap
from lang3d_ros.mapping.pipeline import MappingPipeline

log = logging.getLogger(__name__)


@dataclass
class MappingStack:
    config: object
    text_encoder: object
    semantics: object
    language_map: LanguageMap
    pipeline: MappingPipeline


def ground_truth_tables(scene) -> dict:
    """Keyword arguments of the ground-truth semantics backend from a synthetic scene (or its GroundTruth file):
    instance labels (room structure labelled by its part: floor / wall) and colour names."""
    labels = {int(o.instance_id): o.label for o in scene.objects}
    colors = {int(o.instance_id): o.color_name for o in scene.objects}
    return {"instance_labels": labels, "instance_colors": colors}


class RenderedInstances:
    """EVALUATION TOOL: wraps the ground-truth semantics backend for frames that carry no instance map (a bag
    replay): the instance map is ray cast from the synthetic scene's meshes at the frame's pose and intrinsics."""

    def __init__(self, backend, scene):
        import numpy as np
        import open3d as o3d

        self.backend = backend
        self.text_encoder = backend.text_encoder
        self._rs, self._ids = scene.raycasting_scene()
        self._np, self._o3d = np, o3d

    def instance_map(self, frame):
        np, o3d = self._np, self._o3d
        K = frame.intrinsics
        v, u = np.mgrid[0 : K.height, 0 : K.width].astype(np.float64)
        d_cam = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], -1).reshape(-1, 3)
        d = d_cam @ frame.T_world_cam[:3, :3].T
        rays = np.concatenate([np.broadcast_to(frame.T_world_cam[:3, 3], d.shape), d], 1).astype(np.float32)
        gid = self._rs.cast_rays(o3d.core.Tensor(rays))["geometry_ids"].numpy().astype(np.int64)
        hit = gid != o3d.t.geometry.RaycastingScene.INVALID_ID
        out = np.full(gid.shape, -1, np.int32)
        out[hit] = self._ids[gid[hit]]
        return out.reshape(K.height, K.width)

    def process(self, frame):
        import dataclasses

        if frame.instance_map is None:
            frame = dataclasses.replace(frame, instance_map=self.instance_map(frame))
        return self.backend.process(frame)


def build_stack(
    config,
    instance_labels: dict[int, str] | None = None,
    instance_colors: dict[int, str] | None = None,
    with_trainer: bool | None = None,
    start: bool = True,
    scene=None,
) -> MappingStack:
    """Text encoder + semantics backend + LanguageMap + pipeline (+ autoencoder and Gaussian trainer when enabled).

    The ground-truth backend (an evaluation tool for synthetic scenes) needs ``instance_labels``; with ``scene``
    (a SyntheticScene) it also serves frames without instance maps (bag replays) by ray casting them.
    """
    from lang3d_ros.semantics.backends import build_semantics_backend, build_text_encoder

    sem_cfg = config.semantics
    semantics = build_semantics_backend(sem_cfg, instance_labels=instance_labels, instance_colors=instance_colors)
    if scene is not None and sem_cfg.backend == "ground_truth":
        semantics = RenderedInstances(semantics, scene)
    text_encoder = getattr(semantics, "text_encoder", None) or build_text_encoder(sem_cfg)
    lmap = LanguageMap(config, text_encoder, device=config.fusion.device)
    autoencoder, trainer = None, None
    train = config.mapping.train_gaussians if with_trainer is None else with_trainer
    if train:
        from lang3d_ros.semantics.autoencoder import SceneAutoencoder

        autoencoder = SceneAutoencoder(int(text_encoder.feature_dim), sem_cfg.autoencoder, device=sem_cfg.device)
        trainer = _make_trainer(config, lmap, autoencoder)
    pipeline = MappingPipeline(config, lmap, semantics, trainer=trainer, autoencoder=autoencoder)
    if start:
        pipeline.start()
        if trainer is not None and hasattr(trainer, "start"):
            trainer.start()
    return MappingStack(config, text_encoder, semantics, lmap, pipeline)


def _make_trainer(config, lmap: LanguageMap, autoencoder):
    """The online language-Gaussian trainer; its latent targets are the scene autoencoder's encoding of the
    keyframe's mask features (LangSplat), read at the moment a keyframe is prepared."""
    import torch

    from lang3d_ros.gaussians.instances import point_map_label_source
    from lang3d_ros.gaussians.worker import GaussianTrainer

    def encode(features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return autoencoder.encode(torch.as_tensor(features, dtype=torch.float32))

    # instance codes for the Gaussians: the fused points' segment labels (read under the map's lock)
    trainer = GaussianTrainer(config.gaussians, encoder=encode, label_source=point_map_label_source(lmap))
    lmap.trainer = trainer
    return trainer
