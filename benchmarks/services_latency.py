#!/usr/bin/env python3
"""Service round-trip latency (p50, p95) from a separate client process against a served map file.

A synthetic room's meshes are sampled to ~N points (default 200k); each point gets its instance label's MiniLM
embedding on all three levels (what ground-truth semantics fuse), and the map is written through
PointMap.load_state_dict + LanguageMap.save. A query server process (ros.load_map) serves it; this process
calls Ground, Navigate, Ask and GetMapStatus ``--repeats`` times each (after one warm-up call) and prints a
Markdown table. What it cannot do: include fusion or semantics costs (the map is synthesised, not fused).
"""
from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def synthesise_map(path: Path, n_points: int, seed: int, params: dict) -> int:
    import open3d as o3d

    from lang3d_ros.config import load_config
    from lang3d_ros.datasets.synthetic import generate_scene
    from lang3d_ros.fusion.pointfusion import STATE_VERSION
    from lang3d_ros.grounding.objects import LEVELS
    from lang3d_ros.mapping.language_map import LanguageMap
    from lang3d_ros.semantics.backends import build_text_encoder

    cfg = load_config(overrides=params)
    enc = build_text_encoder(cfg.semantics)
    scene = generate_scene(seed, n_objects=14)
    labels = {o.instance_id: o.label for o in scene.objects}
    colors = {o.instance_id: np.asarray(o.color_rgb) for o in scene.objects}
    meshes = scene.meshes()
    areas = np.array([m.get_surface_area() for _, m in meshes])
    xyz, nrm, rgb, lab = [], [], [], []
    for (inst, mesh), a in zip(meshes, areas):
        k = max(50, int(n_points * a / areas.sum()))
        mesh.compute_vertex_normals()
        pc = mesh.sample_points_uniformly(k, use_triangle_normal=True)  # open3d 0.19 takes no seed: positions vary per run
        xyz.append(np.asarray(pc.points))
        nrm.append(np.asarray(pc.normals))
        rgb.append(np.tile(colors.get(inst, np.array([0.7, 0.7, 0.7])), (k, 1)))
        lab += [labels.get(inst, "floor" if inst == 0 else "object")] * k
    xyz, nrm, rgb = (np.concatenate(v).astype(np.float32) for v in (xyz, nrm, rgb))
    names = sorted(set(lab))
    emb = enc.encode_text(names).float().cpu().numpy().astype(np.float16)
    feats = emb[np.searchsorted(names, lab)]
    n = len(xyz)
    state = {"version": np.array(STATE_VERSION), "frame_count": np.array(1), "feature_dim": np.array(emb.shape[1]),
             "points_xyz": xyz, "normals": nrm, "colors": rgb, "confidence": np.ones(n, np.float32),
             "birth_frame": np.zeros(n, np.int32)}
    for i in range(len(LEVELS)):
        state[f"features_{i}"], state[f"feature_weight_{i}"] = feats, np.ones(n, np.float32)
    lmap = LanguageMap(cfg, enc, device="cpu")
    lmap.points.load_state_dict(state)
    lmap.save(str(path))
    return n


def main() -> None:
    from lang3d_ros.evaluation.metrics import latency_stats
    from lang3d_ros.evaluation.processes import SERVER_CODE, ServiceClient, next_domain_id, spawn, stop, write_params

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    from lang3d_ros.srv import Ask, GetMapStatus, Ground, Navigate
    from geometry_msgs.msg import PoseStamped

    tmp = Path(tempfile.mkdtemp(prefix="lang3d_bench_"))
    from lang3d_ros.config import _deep_update, parameters_from_yaml
    from lang3d_ros.evaluation.runner import SYNTHETIC_CONFIG

    params = parameters_from_yaml(SYNTHETIC_CONFIG)  # what the demo and lang3d eval run with
    _deep_update(params, {"fusion": {"voxel_size_m": 0.02}})
    t0 = time.perf_counter()
    n = synthesise_map(tmp / "bench.l3dmap", a.points, a.seed, params)
    print(f"map: {n} points, {(tmp / 'bench.l3dmap').stat().st_size / 2**20:.0f} MiB, built in {time.perf_counter() - t0:.1f} s")
    params["ros"] = {"load_map": str(tmp / "bench.l3dmap")}
    domain = next_domain_id()
    server = spawn(["-c", SERVER_CODE, "--ros-args", "--params-file", str(write_params(tmp / "params.yaml", params))], domain, tmp / "logs")
    client = ServiceClient(domain, "lang3d_bench_client")
    start = PoseStamped()
    start.header.frame_id = "map"
    start.pose.position.x, start.pose.position.y, start.pose.orientation.w = 0.0, -2.0, 1.0
    calls = {
        "Ground": (Ground, "/lang3d/ground", {"query": "chair"}),
        "Navigate": (Navigate, "/lang3d/navigate", {"instruction": "take me to the chair", "start": start}),
        "Ask": (Ask, "/lang3d/ask", {"question": "how many chairs are there?"}),
        "GetMapStatus": (GetMapStatus, "/lang3d/get_map_status", {}),
    }
    rows = []
    try:
        deadline = time.monotonic() + 120
        while not client.wait_for(GetMapStatus, "/lang3d/get_map_status", 1.0):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"query server did not start; see {tmp / 'logs'}")
        for name, (srv, topic, fields) in calls.items():
            res, _ = client.call(srv, topic, 120.0, **fields)  # warm-up (text encoding, object extraction, grid)
            ms = []
            for _ in range(a.repeats):
                res, t = client.call(srv, topic, 60.0, **fields)
                ms.append(t)
            st = latency_stats(ms)
            rows.append((name, st, bool(res.success)))
    finally:
        client.close()
        stop(server)
    print(f"\n{platform.node()} {platform.machine()}, python {platform.python_version()}, {n} points, {a.repeats} calls each\n")
    print("| service | p50 (ms) | p95 (ms) | max (ms) | success |")
    print("|---|---|---|---|---|")
    for name, st, ok in rows:
        print(f"| {name} | {st['p50']:.1f} | {st['p95']:.1f} | {st['max']:.1f} | {ok} |")


if __name__ == "__main__":
    main()
