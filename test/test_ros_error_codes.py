"""Every service response carries an error_code: the srv constants equal lang3d_ros.errors.ErrorCode, and each
handler gives the code a planner needs (bad request vs no map vs no match vs unreachable vs file refused).

The handlers run in this process on a real rclpy node (own context and domain) and a map fused from a synthetic
scene; the DDS round trip of the same fields is tested in test_ros_services_roundtrip.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import synthetic_config
from ros_helpers import next_domain_id, require_ros

from lang3d_ros.errors import ErrorCode

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]
SERVICES = ("Ground", "Navigate", "Ask", "SaveMap", "LoadMap", "GetMapStatus")


def test_srv_constants_equal_the_enum():
    require_ros()
    import lang3d_ros.srv as srv

    for name in SERVICES:
        text = (REPO / "srv" / f"{name}.srv").read_text().split("---")[1]
        declared = dict(re.findall(r"^uint16 ERROR_(\w+)=(\d+)", text, flags=re.M))
        assert declared == {c.name: str(int(c)) for c in ErrorCode}, name
        response = getattr(srv, name).Response
        for code in ErrorCode:
            assert getattr(response, f"ERROR_{code.name}") == int(code), (name, code)
        assert "error_code" in response.get_fields_and_field_types(), name
        assert response().error_code == ErrorCode.NONE


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    require_ros()
    import rclpy

    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables
    from lang3d_ros.ros.services import QueryServices

    scene = generate_scene(seed=23, n_objects=6)
    map_dir = tmp_path_factory.mktemp("maps")
    cfg = synthetic_config(
        mapping={"keyframes": {"min_translation_m": 0.25}},
        ros={"map_dir": str(map_dir)},
        extraction={"vocabulary": sorted(set(scene.labels))},
        llm={"mode": "parser_only"},
    )
    stack = build_stack(cfg, **ground_truth_tables(scene), start=False)
    empty = build_stack(cfg, **ground_truth_tables(scene), start=False).language_map
    K = DEFAULT_INTRINSICS.scaled(160, 120)
    for f in render_frames(scene, make_trajectory(scene, "orbit", n_frames=16, seed=23), K, seed=23):
        stack.pipeline.process_now(f)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=next_domain_id())
    node = rclpy.create_node("lang3d_codes_test", context=ctx)
    live = QueryServices(node, stack.language_map, cfg, status_fn=stack.pipeline.status, live=True)
    served = QueryServices(node, stack.language_map, cfg)
    nothing = QueryServices(node, empty, cfg)
    for s in (live, served, nothing):
        s.create()
    yield {"live": live, "served": served, "empty": nothing, "scene": scene, "map_dir": map_dir}
    for s in (live, served, nothing):
        s.destroy()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def _call(handler, srv_type, **fields):
    return handler(srv_type.Request(**fields), srv_type.Response())


def test_ground_codes(services):
    from lang3d_ros.srv import Ground

    s, scene = services["live"], services["scene"]
    label = max(scene.objects, key=lambda o: o.aabb.volume).label
    ok = _call(s._ground, Ground, query=label)
    assert ok.success and ok.error_code == Ground.Response.ERROR_NONE and ok.objects
    for bad in (
        dict(query=""),
        dict(query="x" * 5000),
        dict(query=label, level="gigantic"),
        dict(query=label, min_score=float("nan")),
    ):
        r = _call(s._ground, Ground, **bad)
        assert not r.success and r.error_code == Ground.Response.ERROR_BAD_REQUEST and r.message, bad
    nomap = _call(services["empty"]._ground, Ground, query=label)
    assert not nomap.success and nomap.error_code == Ground.Response.ERROR_NO_MAP
    # a valid query that nothing in the map reaches: NOT_FOUND, not BAD_REQUEST
    miss = _call(s._ground, Ground, query=label, min_score=1.0)
    assert all(o.score < 1.0 for o in ok.objects) and not miss.objects
    assert not miss.success and miss.error_code == Ground.Response.ERROR_NOT_FOUND, miss.message


def test_navigate_ask_and_internal_codes(services, monkeypatch):
    from lang3d_ros.srv import Ask, Navigate

    s = services["live"]
    r = _call(s._navigate, Navigate, instruction="")
    assert r.error_code == Navigate.Response.ERROR_BAD_REQUEST
    r = _call(s._navigate, Navigate, instruction="go to the sofa", standoff_m=float("inf"))
    assert r.error_code == Navigate.Response.ERROR_BAD_REQUEST
    r = _call(services["empty"]._navigate, Navigate, instruction="go to the sofa")
    assert r.error_code == Navigate.Response.ERROR_NO_MAP
    r = _call(services["empty"]._ask, Ask, question="how many chairs?")
    assert r.error_code == Ask.Response.ERROR_NO_MAP
    r = _call(s._ask, Ask, question="how many objects are there?")
    assert r.success and r.error_code == Ask.Response.ERROR_NONE

    from lang3d_ros.mapping.queries import NavigateResult

    label = services["scene"].objects[0].label
    found = s.engine.ground(label, max_results=1).objects[0]
    monkeypatch.setattr(
        s.engine, "navigate", lambda *a, **k: NavigateResult(False, "target found but unreachable", target=found)
    )
    r = _call(s._navigate, Navigate, instruction=f"go to the {label}")
    assert not r.success and r.error_code == Navigate.Response.ERROR_UNREACHABLE and r.target.label == found.label
    monkeypatch.setattr(s.engine, "navigate", lambda *a, **k: NavigateResult(False, "no target: nothing matches"))
    r = _call(s._navigate, Navigate, instruction="go to the unicorn")
    assert r.error_code == Navigate.Response.ERROR_NOT_FOUND

    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(s.engine, "ask", boom)
    r = _call(s._ask, Ask, question="how many chairs?")
    assert not r.success and r.error_code == Ask.Response.ERROR_INTERNAL and "secret" not in r.message


def test_map_file_codes(services):
    from lang3d_ros.srv import LoadMap, SaveMap

    live, served, map_dir = services["live"], services["served"], services["map_dir"]
    saved = _call(live._save, SaveMap, path="room.l3dmap")
    assert saved.success and saved.error_code == 0 and Path(saved.path) == map_dir / "room.l3dmap"
    (map_dir / "folder.l3dmap").mkdir()
    r = _call(live._save, SaveMap, path="folder.l3dmap")
    assert not r.success and r.error_code == SaveMap.Response.ERROR_IO_ERROR
    r = _call(live._load, LoadMap, path="room.l3dmap")
    assert not r.success and r.error_code == LoadMap.Response.ERROR_NOT_ALLOWED  # the mapper serves its live map
    assert r.status.num_points == live.map.num_points > 0  # a refusal answers the current status
    (map_dir / "notamap.l3dmap").write_text("{}")
    missing = _call(served._load, LoadMap, path="missing.l3dmap")
    foreign = _call(served._load, LoadMap, path="notamap.l3dmap")
    for r in (missing, foreign):
        assert not r.success and r.error_code == LoadMap.Response.ERROR_IO_ERROR
        assert r.status.num_points == served.map.num_points  # the previous status, not zeros
    # one answer for "not found" and "not a map": a client learns nothing about files from the difference
    assert missing.message.replace("missing", "X") == foreign.message.replace("notamap", "X")
    n_before = served.map.num_points
    ok = _call(served._load, LoadMap, path="room.l3dmap")
    assert ok.success and ok.error_code == 0 and ok.status.num_points == n_before
