"""Language Gaussians trained online beside mapping (CPU rasterizer), saved inside the map file."""

from __future__ import annotations

import pytest

from lang3d_ros.config import Lang3DConfig
from lang3d_ros.geometry.camera import Intrinsics


@pytest.mark.slow
def test_trainer_runs_beside_mapping_and_lands_in_the_map_file(tmp_path):
    from lang3d_ros.datasets.synthetic import generate_scene, make_trajectory, render_frames
    from lang3d_ros.gaussians.ply import load_gaussians
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables
    from lang3d_ros.mapstore import read_map

    scene = generate_scene(seed=2, n_objects=5)
    cfg = Lang3DConfig()
    cfg.semantics.backend = "ground_truth"
    cfg.semantics.gt_text_encoder = "minilm"
    cfg.fusion.device = cfg.gaussians.device = cfg.semantics.device = "cpu"
    cfg.fusion.voxel_size_m = 0.05
    cfg.mapping.train_gaussians = True
    cfg.mapping.autoencoder_steps_per_keyframe = 20
    cfg.gaussians.rgb_iterations = 30
    cfg.gaussians.language_iterations = 20
    # 8 frames, 4 keyframes: the field is checked against the confirmed instances. With unrevisited segments two
    # parts of the table answer "table" with near-equal relevancy, and which one a 50-iteration field or the points
    # rank first is a tie (the field's answer is still one of the points').
    cfg.instances.answer_unrevisited = False
    stack = build_stack(cfg, **ground_truth_tables(scene), start=True)
    trainer = stack.pipeline.trainer
    try:
        K = Intrinsics(65.6, 65.6, 39.5, 29.5, 80, 60)
        for f in render_frames(scene, make_trajectory(scene, "orbit", 8, seed=2), K, seed=2):
            assert stack.pipeline.process_now(f) == ""
        assert trainer.wait_for(("done", "failed"), timeout=240), trainer.status()
        assert trainer.status()["state"] == "done", trainer.status()
        st = stack.pipeline.status()
        assert st["training_state"] == "done" and st["num_gaussians"] > 0 and st["training_iterations"] >= 50
        size = stack.language_map.save(tmp_path / "m.l3dmap")
        assert size > 0
        blob = read_map(tmp_path / "m.l3dmap").blobs["gaussians.ply"]
        (tmp_path / "g.ply").write_bytes(blob)
        loaded = load_gaussians(tmp_path / "g.ply")
        assert loaded.version == 2 and loaded.model.num_gaussians == st["num_gaussians"] > 0
        assert loaded.autoencoder_state is not None
        assert loaded.model.coverage is not None  # the query gate, measured when training was done
        _check_field_from_map_file(tmp_path / "m.l3dmap", stack.language_map, cfg, scene, K)
        _check_ground_from_gaussians(stack.language_map, tmp_path / "m.l3dmap", cfg, scene, K)
    finally:
        stack.pipeline.stop()
        trainer.stop()


def _check_field_from_map_file(map_path, lmap, cfg, scene, K):
    """The evaluation's view of a trained map: its Gaussians render per-level relevancy and RGB for GT poses and are
    scored in the points' record layout (lang3d eval --train, eval-lerf)."""
    from types import SimpleNamespace

    import numpy as np

    from lang3d_ros.datasets.synthetic import make_trajectory
    from lang3d_ros.evaluation.metrics import score_views
    from lang3d_ros.evaluation.render import measure_gaussian_views
    from lang3d_ros.gaussians.evaluation import load_map_field

    field = load_map_field(map_path, lmap.text_encoder, cfg)
    assert field is not None and field.engine.gate is not None
    poses = make_trajectory(scene, "orbit", 8, seed=2)
    rel = field.relevancy_levels(scene.objects[0].label, poses[1], K)
    assert rel.shape == (3, 60, 80) and rel.dtype == np.float32 and np.isfinite(rel).all()
    assert float(rel.min()) >= 0.0 and float(rel.max()) <= 1.0
    truth = SimpleNamespace(intrinsics=K, T_world_cams=poses, stamps_ns=np.arange(8), objects=scene.objects)
    views = measure_gaussian_views(field, truth, scene, [1, 5])
    assert [v["view"] for v in views] == [1, 5] and all(v["heldout_psnr_db"] > 8.0 for v in views)
    queries = [q for v in views for q in v["queries"]]
    assert queries and all(q["error"] is None and len(q["levels"]) == 3 for q in queries)
    scored = score_views({"views": views})
    assert scored["n"] == len(queries) and 0.0 <= scored["localization_accuracy"] <= 1.0


def _check_ground_from_gaussians(lmap, map_path, cfg, scene, K):
    """grounding.field: the trained Gaussians answer Ground with the points' instance ids (live map and served map
    file), and render a relevancy image for a camera pose."""
    import dataclasses

    import numpy as np

    from lang3d_ros.datasets.synthetic import make_trajectory
    from lang3d_ros.mapping.language_map import LanguageMap

    labels = sorted({o.label for o in scene.objects if sum(x.label == o.label for x in scene.objects) == 1})
    assert labels

    def tops(m, field):
        m.config.grounding.field = field
        return {lab: [o.instance_id for o in m.ground(lab)] for lab in labels}

    lmap.config = dataclasses.replace(lmap.config, grounding=dataclasses.replace(lmap.config.grounding))
    by_points = tops(lmap, "points")
    assert lmap.answering_gaussians() is None
    by_gaussians = tops(lmap, "gaussians")
    assert lmap.answering_gaussians() is not None
    answered = [lab for lab in labels if by_gaussians[lab]]
    # a 50-iteration field at 80x60 carries the larger objects only (small ones get too few Gaussians)
    assert len(answered) >= 0.5 * len(labels), by_gaussians
    # the Gaussians rank the same instance table: every answer is one of the points' answers, the best the same
    assert all(set(by_gaussians[lab]) <= set(by_points[lab]) for lab in answered), (by_points, by_gaussians)
    assert sum(by_gaussians[lab][0] == by_points[lab][0] for lab in answered) >= 0.8 * len(answered)
    img = lmap.render_relevancy(labels[0], make_trajectory(scene, "orbit", 8, seed=2)[1], K)
    assert img.shape == (60, 80) and img.dtype == np.float32 and 0.0 <= img.min() <= img.max() <= 1.0
    lmap.config.grounding.field = "points"
    with pytest.raises(ValueError, match="no trained language Gaussians"):
        lmap.render_relevancy(labels[0], np.eye(4), K)

    served = LanguageMap(
        dataclasses.replace(cfg, grounding=dataclasses.replace(cfg.grounding)), lmap.text_encoder, device="cpu"
    )
    served.load(map_path)
    assert tops(served, "gaussians") == by_gaussians  # the map file's Gaussians answer as the live ones did
    assert tops(served, "points") == by_points
