"""RenderRelevancy through a real query server node in its own process (DDS, loopback only): a map file with language
Gaussians answers from the Gaussians, the same image as the library renders, the best pixel on the object and
Ground's instance ids; a map file without Gaussians answers from the points; bad requests get their error codes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from ros_helpers import next_domain_id, require_ros, spawn, stop
from test_gaussians_relevancy_render import coded_gaussians_from_points, synthetic_room, write_map_with_gaussians

from lang3d_ros.errors import ErrorCode
from lang3d_ros.evaluation.processes import ServiceClient

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]
SEED = 41
CAMERA_FRAME = "camera_color_optical_frame"


def test_srv_constants_equal_the_enum():
    require_ros()
    from lang3d_ros.srv import RenderRelevancy

    text = (REPO / "srv" / "RenderRelevancy.srv").read_text().split("---")[1]
    declared = dict(re.findall(r"^uint16 ERROR_(\w+)=(\d+)", text, flags=re.M))
    assert declared == {c.name: str(int(c)) for c in ErrorCode}
    for c in ErrorCode:
        assert getattr(RenderRelevancy.Response, f"ERROR_{c.name}") == int(c)
    assert RenderRelevancy.Response().error_code == ErrorCode.NONE


class _Client(ServiceClient):
    """The evaluation's ServiceClient, answering only the response (these tests read fields, not latency)."""

    def call(self, srv_type, name: str, timeout_s: float = 90.0, **fields):
        return super().call(srv_type, name, timeout_s, **fields)[0]


def test_render_relevancy_round_trip_through_a_query_server(tmp_path):
    require_ros()
    from lang3d_ros.srv import Ground, LoadMap, RenderRelevancy

    from lang3d_ros.evaluation.lerf_protocol import box_contains, mask_boxes
    from lang3d_ros.evaluation.render import gt_instance_map
    from lang3d_ros.gaussians.relevancy_render import render_query_view
    from lang3d_ros.mapping.language_map import LanguageMap
    from lang3d_ros.ros import conversions as cv

    scene, cfg, stack, poses, K = synthetic_room(SEED)
    maps = tmp_path / "maps"
    maps.mkdir()
    lmap = stack.language_map
    write_map_with_gaussians(lmap, coded_gaussians_from_points(lmap), maps / "room.l3dmap")
    lmap.save(maps / "points_only.l3dmap")
    params = {
        "semantics": {"backend": "ground_truth", "gt_text_encoder": "minilm"},
        "fusion": {"device": "cpu", "voxel_size_m": float(cfg.fusion.voxel_size_m)},
        "gaussians": {"device": "cpu"},
        "llm": {"mode": "parser_only"},
        "ros": {"map_dir": str(maps), "load_map": str(maps / "room.l3dmap")},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    domain = next_domain_id()
    server = spawn(
        [str(REPO / "scripts" / "query_server_node"), "--ros-args", "--params-file", str(tmp_path / "params.yaml")],
        domain,
        tmp_path / "logs",
    )
    client = _Client(domain)
    try:
        T = poses[6]
        inst = gt_instance_map(scene, T, K)
        labels = [o.label for o in scene.objects]
        obj = max(
            (o for o in scene.objects if labels.count(o.label) == 1), key=lambda o: int((inst == o.instance_id).sum())
        )
        query = f"the {obj.label}"
        camera = cv.intrinsics_to_camera_info(K, cv.make_header(CAMERA_FRAME, 1_234_000_000))
        pose = cv.matrix_to_pose_stamped(T, "map", 1_234_000_000)

        def render(**fields):
            req = dict(query=query, camera=camera, camera_pose=pose, want_mask=True)
            req.update(fields)
            return client.call(RenderRelevancy, "/lang3d/render_relevancy", **req)

        ground = client.call(Ground, "/lang3d/ground", query=query)
        res = render()
        assert res.success and res.error_code == RenderRelevancy.Response.ERROR_NONE, res.message
        assert res.answered_by == "gaussians" and res.level_used == "whole" and res.target_in_view
        img = res.relevancy
        assert (img.encoding, img.width, img.height) == ("32FC1", K.width, K.height)
        assert img.header.frame_id == CAMERA_FRAME and cv.stamp_to_ns(img.header.stamp) == 1_234_000_000
        rel = cv.image_to_numpy(img)
        assert rel.dtype == np.float32 and 0.0 <= rel.min() and rel.max() <= 1.0
        mask = cv.image_to_numpy(res.mask)
        assert res.mask.encoding == "mono8" and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, rel >= res.mask_threshold - 1e-6)
        # the same answer as the library renders from the same file in this process
        local = LanguageMap(lmap.config, lmap.text_encoder, device="cpu")
        local.load(maps / "room.l3dmap")
        view = render_query_view(local, query, T, K)
        assert np.allclose(rel, view.relevancy, atol=1e-5) and (res.best_u, res.best_v) == view.best_uv
        # the instances are Ground's, the best pixel lies on the object, its point in the map frame
        assert list(res.instance_ids)[0] == ground.objects[0].instance_id
        assert len(res.instance_ids) == len(res.instance_scores) == len(res.instance_pixels) >= 1
        assert box_contains(mask_boxes(inst == obj.instance_id), res.best_u, res.best_v)
        assert res.has_best_point and res.best_point.header.frame_id == "map"
        p = np.array([res.best_point.point.x, res.best_point.point.y, res.best_point.point.z])
        assert np.all(np.abs(p - obj.aabb.center) <= obj.aabb.size / 2 + 0.05), (p, obj.aabb)
        assert res.camera_pose.header.frame_id == "map" and res.latency_ms > 0
        assert cv.pose_to_matrix(res.camera_pose.pose) == pytest.approx(T, abs=1e-6)
        assert len(render(want_mask=False).mask.data) == 0

        # bad requests: absurd size, pose in another frame, distorted camera, current camera on a file server
        huge = cv.intrinsics_to_camera_info(K, camera.header)
        huge.width, huge.height = 100_000, 100_000
        r = render(camera=huge)
        assert not r.success and r.error_code == RenderRelevancy.Response.ERROR_BAD_REQUEST and "size" in r.message
        r = render(camera_pose=cv.matrix_to_pose_stamped(T, "odom", 0))
        assert r.error_code == RenderRelevancy.Response.ERROR_BAD_REQUEST and "frame" in r.message
        distorted = cv.intrinsics_to_camera_info(K, camera.header)
        distorted.d = [0.1, 0.0, 0.0, 0.0, 0.0]
        assert render(camera=distorted).error_code == RenderRelevancy.Response.ERROR_BAD_REQUEST
        r = client.call(RenderRelevancy, "/lang3d/render_relevancy", query=query)  # width = height = 0
        assert r.error_code == RenderRelevancy.Response.ERROR_NOT_ALLOWED and "camera" in r.message
        assert render(query="").error_code == RenderRelevancy.Response.ERROR_BAD_REQUEST
        assert render(level="enormous").error_code == RenderRelevancy.Response.ERROR_BAD_REQUEST

        # a map file without Gaussians: the points' splats answer, with the same instances
        assert client.call(LoadMap, "/lang3d/load_map", path="points_only.l3dmap").success
        pts = render()
        assert pts.success and pts.answered_by == "points" and list(pts.instance_ids) == list(res.instance_ids)
        assert box_contains(mask_boxes(inst == obj.instance_id), pts.best_u, pts.best_v)
    finally:
        client.close()
        stop(server)


def test_the_live_mapper_renders_its_current_camera():
    """width = height = 0: the camera of the last keyframe the live mapper fused (handler on a real rclpy node)."""
    require_ros()
    import rclpy
    from lang3d_ros.srv import RenderRelevancy

    from lang3d_ros.ros import conversions as cv
    from lang3d_ros.ros.services import QueryServices

    scene, cfg, stack, poses, K = synthetic_room(SEED, n_frames=8)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=next_domain_id())
    node = rclpy.create_node("lang3d_render_live_test", context=ctx)
    try:
        node.pipeline = stack.pipeline  # what MapperNode holds
        live = QueryServices(node, stack.language_map, cfg, live=True)
        last = stack.pipeline.selector.last
        label = max(scene.objects, key=lambda o: o.aabb.volume).label
        res = live._render_relevancy(RenderRelevancy.Request(query=label), RenderRelevancy.Response())
        assert res.success, res.message
        assert (res.relevancy.width, res.relevancy.height) == (last.intrinsics.width, last.intrinsics.height)
        assert cv.pose_to_matrix(res.camera_pose.pose) == pytest.approx(last.T_world_cam, abs=1e-6)
        assert cv.stamp_to_ns(res.relevancy.header.stamp) == last.stamp_ns and res.answered_by == "points"
        stack.pipeline.selector.reset()  # no keyframe yet: said so
        res = live._render_relevancy(RenderRelevancy.Request(query=label), RenderRelevancy.Response())
        assert not res.success and res.error_code == RenderRelevancy.Response.ERROR_NO_MAP, res.message
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
