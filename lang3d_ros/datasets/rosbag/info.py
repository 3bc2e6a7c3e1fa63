"""Summary of a bag: topics, counts, rates, image sizes and encodings, intrinsics, trajectory length."""

from __future__ import annotations

import numpy as np

from lang3d_ros.datasets.rosbag.reader import reading
from lang3d_ros.datasets.rosbag.topics import CAMERA_INFO, IMAGE, POSE_TYPES, header_stamp_ns, typestore


def bag_info(path) -> dict:
    """{path, storage files, duration_s, topics: [{topic, msgtype, count, rate_hz, width, height, encoding}],
    intrinsics: {topic: {fx, fy, cx, cy, width, height}}, trajectory: {topic: {length_m, duration_s}}}.
    Rates use header stamps (receive times for other types): (count - 1) / (last - first). Reads every message once."""
    ts = typestore()
    with reading(path) as reader:
        per: dict[str, dict] = {}
        intr, traj = {}, {}
        for c, log_ns, raw in reader.messages():
            e = per.setdefault(c.topic, {"topic": c.topic, "msgtype": c.msgtype, "count": 0, "stamps": []})
            e["count"] += 1
            has_header = c.msgtype in (IMAGE, CAMERA_INFO) or c.msgtype in POSE_TYPES
            e["stamps"].append(header_stamp_ns(raw) if has_header else log_ns)  # header-less types: receive time
            if c.msgtype == IMAGE and "encoding" not in e:
                m = ts.deserialize_cdr(raw, c.msgtype)
                e.update(width=int(m.width), height=int(m.height), encoding=m.encoding)
            elif c.msgtype == CAMERA_INFO and c.topic not in intr:
                m = ts.deserialize_cdr(raw, c.msgtype)
                k = np.asarray(m.k, dtype=float)
                intr[c.topic] = {
                    "fx": k[0],
                    "fy": k[4],
                    "cx": k[2],
                    "cy": k[5],
                    "width": int(m.width),
                    "height": int(m.height),
                }
            elif c.msgtype in POSE_TYPES:
                m = ts.deserialize_cdr(raw, c.msgtype)
                pose = m.pose.pose if hasattr(m.pose, "pose") else m.pose
                traj.setdefault(c.topic, []).append(
                    (header_stamp_ns(raw), pose.position.x, pose.position.y, pose.position.z)
                )
        duration = (reader.end_time - reader.start_time) * 1e-9 if reader.message_count else 0.0
        files = [str(p) for p in getattr(reader, "paths", [])]
    topics = []
    for e in sorted(per.values(), key=lambda e: e["topic"]):
        st = np.sort(np.asarray(e.pop("stamps"), dtype=np.int64))
        span = (st[-1] - st[0]) * 1e-9 if len(st) > 1 else 0.0
        e["rate_hz"] = (len(st) - 1) / span if span > 0 else 0.0
        topics.append(e)
    trajectory = {}
    for topic, rows in traj.items():
        a = np.asarray(sorted(rows), dtype=float)
        trajectory[topic] = {
            "length_m": float(np.linalg.norm(np.diff(a[:, 1:], axis=0), axis=1).sum()),
            "duration_s": float((a[-1, 0] - a[0, 0]) * 1e-9),
        }
    return {
        "path": str(path),
        "files": files,
        "duration_s": float(duration),
        "message_count": int(sum(t["count"] for t in topics)),
        "topics": topics,
        "intrinsics": intr,
        "trajectory": trajectory,
    }
