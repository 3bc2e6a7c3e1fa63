#!/usr/bin/env python3
"""Relational grounding accuracy of the 3D-LLM path on synthetic ground-truth scenes.

Queries with unique answers are generated from GT (support relations, colours, distances, sizes,
viewer-relative order); Acc@0.25 / Acc@0.5 = share of queries whose top answer's box has 3D IoU
above the threshold with the GT object's box. Prints a Markdown table per relation and per path.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from lang3d_ros.datasets.synthetic import generate_scene
from lang3d_ros.geometry.boxes import iou_3d
from lang3d_ros.llm import LLMConfig, Reasoner
from lang3d_ros.llm.backends import load_smollm2
from lang3d_ros.llm.relations import box_gap_m, to_robot_frame
from lang3d_ros.llm.scenes import objects_from_ground_truth

POSE = np.array([0.0, -2.4, np.pi / 2])  # at the room's south wall, looking north


def queries_for(scene) -> list[tuple[str, str, int]]:
    """(relation, query, gt instance id) with a unique answer in this scene."""
    objs = scene.objects
    by_id = {o.instance_id: o for o in objs}
    out = []
    count = lambda lab: sum(o.label == lab for o in objs)
    for o in objs:
        if count(o.label) == 1:
            out.append(("label", f"the {o.label}", o.instance_id))
        elif sum(x.label == o.label and x.color_name == o.color_name for x in objs) == 1:
            out.append(("color", f"the {o.color_name} {o.label}", o.instance_id))
        if o.support_id and o.support_id in by_id:
            s = by_id[o.support_id]
            same = [x for x in objs if x.label == o.label and x.support_id and by_id[x.support_id].label == s.label]
            if len(same) == 1:
                out.append(("on", f"the {o.label} on the {s.label}", o.instance_id))
    for lab in sorted({o.label for o in objs}):
        c = [o for o in objs if o.label == lab]
        if len(c) < 2:
            continue
        vol = sorted(c, key=lambda o: -o.aabb.volume)
        if vol[0].aabb.volume > 1.3 * vol[1].aabb.volume:
            out.append(("largest", f"the largest {lab}", vol[0].instance_id))
        left = sorted(c, key=lambda o: -to_robot_frame(o.aabb.center[:2], POSE)[0, 1])
        l0, l1 = (to_robot_frame(x.aabb.center[:2], POSE)[0, 1] for x in left[:2])
        if l0 - l1 > 0.3:
            out.append(("leftmost", f"the leftmost {lab}", left[0].instance_id))
        for ref in objs:
            if ref.label == lab or count(ref.label) != 1:
                continue
            d = sorted(c, key=lambda o: box_gap_m(o.aabb, ref.aabb))
            if box_gap_m(d[1].aabb, ref.aabb) - box_gap_m(d[0].aabb, ref.aabb) > 0.3:
                out.append(("closest", f"the {lab} closest to the {ref.label}", d[0].instance_id))
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=100, help="at most this many queries")
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--objects", type=int, default=14)
    ap.add_argument("--parser-only", action="store_true", help="no model: the deterministic parser alone")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    a = ap.parse_args()
    cfg = LLMConfig(mode="parser_only" if a.parser_only else "llm_first", max_new_tokens=a.max_new_tokens)
    t0 = time.perf_counter()
    backend = None if a.parser_only else load_smollm2(cfg)
    load_s = time.perf_counter() - t0
    r = Reasoner(cfg, backend=backend)
    rng = np.random.default_rng(0)
    items = []
    for seed in range(a.scenes):
        scene = generate_scene(seed, a.objects)
        items += [(scene, q) for q in queries_for(scene)]
    items = [items[i] for i in sorted(rng.permutation(len(items))[: a.queries])]
    stats = defaultdict(lambda: [0, 0, 0])  # n, hit25, hit50
    lat = []
    objs_cache = {}
    for scene, (rel, q, gt_id) in items:
        objs = objs_cache.setdefault(scene.seed, objects_from_ground_truth(scene))
        gt = next(o for o in objs if o.instance_id == gt_id)
        t = time.perf_counter()
        ans = r.ground(q, objs, POSE)
        lat.append(time.perf_counter() - t)
        iou = iou_3d(ans.objects[0].box, gt.box) if ans.objects else 0.0
        for key in (("relation", rel), ("path", ans.path), ("all", "all")):
            s = stats[key]
            s[0] += 1
            s[1] += iou >= 0.25
            s[2] += iou >= 0.5
    print(
        f"model: {'none (parser only)' if a.parser_only else 'SmolLM2-135M-Instruct (built-in)'}, load {load_s:.1f} s, "
        f"{len(items)} queries over {a.scenes} scenes, median latency {1e3 * np.median(lat):.0f} ms/query\n"
    )
    print("| group | n | Acc@0.25 | Acc@0.5 |\n|---|---|---|---|")
    for key in sorted(stats, key=lambda k: (k[0] != "all", k[0], k[1])):
        n, h25, h50 = stats[key]
        print(f"| {key[0]}={key[1]} | {n} | {100 * h25 / n:.1f}% | {100 * h50 / n:.1f}% |")


if __name__ == "__main__":
    main()
