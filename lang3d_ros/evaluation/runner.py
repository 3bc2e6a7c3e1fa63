"""``lang3d eval``: replay a bag into the real mapper process, query its services from this process, score.

Steps: write a params file -> start the mapper node (mapping + services in one process, as deployed) -> wait
for its services -> replay the bag at ``rate`` x the recorded rate -> poll GetMapStatus until every received
frame is fused, dropped or rejected and the map stops changing (and training is done when enabled) -> call
Ground / Navigate / Ask per query (each errored or timed-out call is recorded, counted as a miss) -> SaveMap
-> read the mapper's peak memory -> stop it -> render relevancy of the saved map into GT camera views.
What it cannot do: evaluate maps it cannot save (a mapper without SaveMap), or control CPU contention: frames
dropped under load are counted, not retried.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lang3d_ros.evaluation import processes as procs
from lang3d_ros.evaluation.metrics import DEFAULT_SETTINGS, RAW_FORMAT, RAW_FORMAT_VERSION, recompute
from lang3d_ros.evaluation.queries import QuerySet

log = logging.getLogger(__name__)


SYNTHETIC_CONFIG = Path(__file__).resolve().parents[2] / "config" / "synthetic.yaml"


def default_params(gt_path: Path) -> dict:
    """Mapper parameters for synthetic scenes (config/synthetic.yaml: GT-label semantics via MiniLM, CPU fusion,
    parser-only LLM) with the ground-truth file, a faster status period and no autosave (SaveMap writes the map)."""
    from lang3d_ros.config import _deep_update, parameters_from_yaml

    params = parameters_from_yaml(SYNTHETIC_CONFIG)
    _deep_update(
        params,
        {
            "ros": {
                "ground_truth_file": str(Path(gt_path).resolve()),
                "status_period_s": 0.5,
                "cloud_period_s": 0.0,
                "autosave": {"period_s": 0.0, "on_shutdown": False},
            }
        },
    )
    return params


def merged_params(gt_path: Path, config_files: list[Path] | None = None, overrides: dict | None = None) -> dict:
    from lang3d_ros.config import _deep_update, parameters_from_yaml

    params = default_params(gt_path)
    for f in config_files or []:
        _deep_update(params, parameters_from_yaml(f))
    _deep_update(params, overrides or {})
    params.setdefault("ros", {})["ground_truth_file"] = str(Path(gt_path).resolve())
    return params


@dataclass
class EvalOptions:
    rate: float = 1.0
    config_files: list[Path] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    startup_timeout_s: float = 90.0
    mapping_timeout_s: float = 180.0
    training_timeout_s: float = 600.0
    service_timeout_s: float = 30.0
    max_pending_frames: int = 16  # the replay waits while the mapper has this many frames received, not yet fused
    n_views: int = 4
    min_view_fraction: float = 0.004  # a label is queried in a view when its GT mask covers this share
    progress: bool = True


# ----------------------------------------------------------------------------- message -> dict
def object_dict(msg) -> dict:
    from lang3d_ros.ros.conversions import detected_object_box

    return {
        "instance_id": int(msg.instance_id),
        "label": msg.label,
        "query": msg.query,
        "score": float(msg.score),
        "level": msg.level,
        "num_points": int(msg.num_points),
        "box": detected_object_box(msg).to_dict(),
        "aabb": {
            "center": [msg.bbox_center.position.x, msg.bbox_center.position.y, msg.bbox_center.position.z],
            "size": [msg.bbox_size.x, msg.bbox_size.y, msg.bbox_size.z],
        },
    }


def status_dict(st) -> dict:
    keys = (
        "source",
        "frames_received",
        "frames_fused",
        "frames_rejected",
        "frames_dropped",
        "keyframes",
        "num_points",
        "num_gaussians",
        "training_state",
        "training_iterations",
        "training_loss",
        "training_psnr_db",
        "memory_mb",
    )
    out = {k: getattr(st, k) for k in keys}
    return {k: (float(v) if isinstance(v, float) else v) for k, v in out.items()}


def _yaw(q) -> float:
    return float(2.0 * math.atan2(q.z, q.w))


def response_dict(service: str, res) -> dict:
    out = {"success": bool(res.success), "message": res.message, "error_code": int(getattr(res, "error_code", 0))}
    if service == "ground":
        out.update(
            answered_by=res.answered_by, latency_ms=float(res.latency_ms), objects=[object_dict(o) for o in res.objects]
        )
    elif service == "ask":
        out.update(answer=res.answer, answered_by=res.answered_by, objects=[object_dict(o) for o in res.objects])
    elif service == "navigate":
        out["target"] = object_dict(res.target) if res.target.label or res.target.num_points else None
        if res.success:
            p = res.goal.pose
            out["goal"] = {
                "x": p.position.x,
                "y": p.position.y,
                "yaw": _yaw(p.orientation),
                "frame_id": res.goal.header.frame_id,
            }
            out["path"] = [[ps.pose.position.x, ps.pose.position.y] for ps in res.path.poses]
            out["path_length_m"] = float(res.path_length_m)
    return out


def _pose_stamped(xy_yaw, frame_id: str = "map"):
    from geometry_msgs.msg import PoseStamped

    ps = PoseStamped()
    ps.header.frame_id = frame_id
    ps.pose.position.x, ps.pose.position.y = float(xy_yaw[0]), float(xy_yaw[1])
    ps.pose.orientation.z, ps.pose.orientation.w = math.sin(xy_yaw[2] / 2), math.cos(xy_yaw[2] / 2)
    return ps


# ----------------------------------------------------------------------------- phases
class _Session:
    """The mapper process and this process's client, with every GetMapStatus call recorded."""

    def __init__(self, out_dir: Path, params: dict, opts: EvalOptions):
        from lang3d_ros.srv import GetMapStatus

        self.opts = opts
        self.status_calls: list[dict] = []
        self.domain = procs.next_domain_id()
        self.params_file = procs.write_params(out_dir / "params.yaml", params)
        self.mapper = procs.spawn(
            ["-c", procs.MAPPER_CODE, "--ros-args", "--params-file", str(self.params_file)],
            self.domain,
            out_dir / "logs",
        )
        from lang3d_ros.ros.bag_player import use_replay_dds_profile

        # this process publishes the bag: fast repair of lost samples. Fast DDS reads the file when the process's
        # first participant is created; the variable is restored after, so nothing else started later inherits it
        before = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")
        use_replay_dds_profile()
        try:
            self.client = procs.ServiceClient(self.domain)
        finally:
            if before is None:
                os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
            else:
                os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = before
        self.GetMapStatus = GetMapStatus
        deadline = time.monotonic() + opts.startup_timeout_s
        while not self.client.wait_for(GetMapStatus, "/lang3d/get_map_status", 1.0):
            if self.mapper.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the mapper did not start (exit code {self.mapper.poll()}); see {out_dir / 'logs'}")

    def status(self) -> dict:
        res, ms = self.client.call(self.GetMapStatus, "/lang3d/get_map_status", self.opts.service_timeout_s)
        st = status_dict(res.status)
        self.status_calls.append({"latency_ms": ms, "status": st})
        return st

    def close(self) -> int:
        self.client.close()
        return procs.stop(self.mapper)


def replay(session: _Session, bag: Path, rate: float, progress: bool, max_pending: int = 0) -> dict:
    """Publish the bag into the mapper at ``rate``; with ``max_pending`` > 0 the bag clock pauses while the mapper
    holds that many frames received and not yet fused, dropped or rejected (the bag is offline: waiting keeps
    every frame a slower mapper would otherwise drop). Returns the bag's message counts per topic."""
    from tqdm import tqdm

    from lang3d_ros.ros.bag_player import play

    def mapper_busy() -> bool:  # an offline replay waits for the mapper instead of making it drop frames
        if max_pending <= 0:
            return False
        st = session.status()
        return st["frames_received"] - st["frames_fused"] - st["frames_dropped"] - st["frames_rejected"] >= max_pending

    with tqdm(desc="replay", unit="msg", disable=not progress) as bar:
        return play(session.client.node, bag, rate=rate, progress=lambda _topic: bar.update(1), hold=mapper_busy)


def wait_for_mapping(session: _Session, opts: EvalOptions, n_images: int) -> dict:
    """Poll until received == fused + dropped + rejected and the map is unchanged for 3 polls, or nothing has
    changed for 20 polls (10 s: frames left pending in the mapper's synchroniser at the end of the bag, e.g. an
    image whose pose never came, are counted in ``pending_frames``), or timeout; then, when training runs, until
    training_state is done (or timeout)."""
    from tqdm import tqdm

    t0 = time.monotonic()
    errors: list[str] = []
    stable, last, st = 0, None, {}
    with tqdm(total=n_images, desc="mapping", unit="frame", disable=not opts.progress) as bar:
        while True:
            st = session.status()
            done = st["frames_fused"] + st["frames_dropped"] + st["frames_rejected"]
            bar.n = min(done, n_images)
            bar.refresh()
            key = (st["frames_fused"], st["num_points"], done)
            stable = stable + 1 if key == last else 0
            last = key
            if st["frames_received"] > 0 and done >= st["frames_received"] and stable >= 3:
                break
            if st["frames_received"] > 0 and stable >= 20:
                break
            if time.monotonic() - t0 > opts.mapping_timeout_s:
                errors.append(f"mapping did not settle in {opts.mapping_timeout_s:.0f} s: {st}")
                break
            time.sleep(0.5)
    wait_s = time.monotonic() - t0
    pending = max(0, st.get("frames_received", 0) - st["frames_fused"] - st["frames_dropped"] - st["frames_rejected"])
    train = {"state": st.get("training_state"), "wait_s": 0.0}
    if st.get("training_state") not in ("disabled", "done", "", None):
        t1 = time.monotonic()
        while st.get("training_state") != "done":
            if time.monotonic() - t1 > opts.training_timeout_s:
                errors.append(f"training not done after {opts.training_timeout_s:.0f} s (state {st['training_state']})")
                break
            time.sleep(2.0)
            st = session.status()
        train = {
            "state": st.get("training_state"),
            "wait_s": time.monotonic() - t1,
            "iterations": st.get("training_iterations"),
            "psnr_db": st.get("training_psnr_db"),
        }
    return {"final_status": st, "wait_s": wait_s, "errors": errors, "training": train, "pending_frames": pending}


def run_queries(session: _Session, qs: QuerySet, opts: EvalOptions) -> list[dict]:
    from tqdm import tqdm

    from lang3d_ros.evaluation.processes import ServiceTimeout
    from lang3d_ros.srv import Ask, Ground, Navigate

    start = _pose_stamped(qs.start_xy_yaw)
    entries = []
    for q in tqdm(qs.queries, desc="queries", unit="query", disable=not opts.progress):
        if q.service == "ground":
            srv, name, fields = Ground, "/lang3d/ground", {"query": q.text, "max_results": 3}
            req_log = dict(fields)
        elif q.service == "navigate":
            standoff = float(q.standoff_m or qs.standoff_m)
            srv, name, fields = (
                Navigate,
                "/lang3d/navigate",
                {"instruction": q.text, "standoff_m": standoff, "start": start},
            )
            req_log = {"instruction": q.text, "standoff_m": standoff, "start_xy_yaw": list(qs.start_xy_yaw)}
        else:
            srv, name, fields = Ask, "/lang3d/ask", {"question": q.text, "robot_pose": start}
            req_log = {"question": q.text, "robot_pose_xy_yaw": list(qs.start_xy_yaw)}
        entry = {
            "id": q.id,
            "service": q.service,
            "kind": q.kind,
            "text": q.text,
            "target_ids": list(q.target_ids),
            "expected_count": q.expected_count,
            "standoff_m": q.standoff_m or (qs.standoff_m if q.service == "navigate" else None),
            "request": req_log,
            "response": None,
            "latency_ms": None,
            "error": None,
        }
        try:
            res, ms = session.client.call(srv, name, opts.service_timeout_s, **fields)
            entry["response"], entry["latency_ms"] = response_dict(q.service, res), ms
        except ServiceTimeout as exc:
            entry["error"] = f"timeout: {exc}"
        except Exception as exc:  # a failed call is a miss, recorded with its reason
            entry["error"] = f"{type(exc).__name__}: {exc}"
        entries.append(entry)
    return entries


def save_map(session: _Session, path: Path, opts: EvalOptions) -> dict:
    from lang3d_ros.srv import SaveMap

    try:
        res, ms = session.client.call(SaveMap, "/lang3d/save_map", opts.service_timeout_s * 4, path=str(path.resolve()))
        return {
            "success": bool(res.success),
            "message": res.message,
            "path": res.path,
            "size_bytes": int(res.size_bytes),
            "latency_ms": ms,
        }
    except Exception as exc:
        return {
            "success": False,
            "message": f"{type(exc).__name__}: {exc}",
            "path": "",
            "size_bytes": 0,
            "latency_ms": None,
        }


# ----------------------------------------------------------------------------- rendered views
def choose_views(n_poses: int, n_views: int) -> list[int]:
    if n_poses == 0 or n_views <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n_poses - 1, min(n_views, n_poses) + 2)[1:-1]})


def load_map_for_eval(map_path: Path, params: dict):
    """The saved map in this process (same text encoder as the mapper)."""
    from lang3d_ros.config import load_config
    from lang3d_ros.mapping.language_map import LanguageMap
    from lang3d_ros.semantics.backends import build_text_encoder

    cfg = load_config(overrides=params)
    lmap = LanguageMap(cfg, build_text_encoder(cfg.semantics), device="cpu")
    lmap.load(str(map_path))
    return lmap, cfg


def measure_views(lmap, cfg, truth, scene, opts: EvalOptions, heatmaps_path: Path | None = None) -> list[dict]:
    """Per GT view and per label visible in it: the LERF per-level measurements of the rendered relevancy."""
    from tqdm import tqdm

    from lang3d_ros.evaluation.lerf_protocol import mask_boxes, measure_levels
    from lang3d_ros.evaluation.render import _NoBackend, gather, gt_instance_map, point_index_image
    from lang3d_ros.mapping.build import RenderedInstances

    K = truth.intrinsics
    if K is None or lmap.num_points == 0:
        return []
    rays = RenderedInstances(_NoBackend(), scene)
    label_of = {o.instance_id: o.label for o in truth.objects}
    xyz = lmap.points.points_xyz.cpu().numpy()
    rel_cache: dict[str, np.ndarray] = {}
    views, heat = [], {}
    for vi in tqdm(
        choose_views(len(truth.T_world_cams), opts.n_views), desc="views", unit="view", disable=not opts.progress
    ):
        T = truth.T_world_cams[vi]
        inst = gt_instance_map(scene, T, K, rays)
        index = point_index_image(xyz, T, K, point_size_m=cfg.fusion.voxel_size_m)
        labels = sorted({label_of[i] for i in np.unique(inst) if i in label_of})
        entries = []
        for lab in labels:
            gt_mask = np.isin(inst, [i for i, l in label_of.items() if l == lab])
            if gt_mask.mean() < opts.min_view_fraction:
                continue
            try:
                if lab not in rel_cache:
                    rel_cache[lab] = lmap.relevancy_by_level(lab)[0]
                rel_img = gather(rel_cache[lab], index)
                levels = [m.to_dict() for m in measure_levels(rel_img, gt_mask)]
                entries.append(
                    {
                        "label": lab,
                        "gt_pixels": int(gt_mask.sum()),
                        "gt_boxes_xyxy": mask_boxes(gt_mask).tolist(),
                        "levels": levels,
                        "error": None,
                    }
                )
                if len(heat) < 8:
                    k = int(np.argmax([lv["score"] for lv in levels]))
                    heat[f"v{vi}_{lab}"] = rel_img[k]
            except Exception as exc:
                entries.append(
                    {
                        "label": lab,
                        "gt_pixels": int(gt_mask.sum()),
                        "gt_boxes_xyxy": mask_boxes(gt_mask).tolist(),
                        "levels": [],
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                )
        views.append(
            {
                "view": int(vi),
                "stamp_ns": int(truth.stamps_ns[vi]) if len(truth.stamps_ns) > vi else None,
                "T_world_cam": np.asarray(T).tolist(),
                "queries": entries,
            }
        )
    if heatmaps_path is not None and heat:
        np.savez_compressed(heatmaps_path, **heat)
    return views


def measure_map_gaussians(
    map_path: Path, lmap, cfg, truth, scene, point_views: list[dict], opts: EvalOptions
) -> list[dict]:
    """The same GT views rendered from the map file's language Gaussians (when it holds trained ones; [] otherwise),
    scored side by side with the points' (results["lerf_gaussians"])."""
    from lang3d_ros.evaluation.render import measure_gaussian_views
    from lang3d_ros.gaussians.evaluation import load_map_field

    field = load_map_field(map_path, lmap.text_encoder, cfg, device="cpu")
    if field is None:
        return []
    return measure_gaussian_views(field, truth, scene, [v["view"] for v in point_views], opts.min_view_fraction)


def intake_summary_line(log_dir: Path) -> str | None:
    """The mapper's last "intake: ..." line (what became of every image and pose, by reason; logged when it stops),
    from its log files, or None."""
    line = None
    for f in sorted(Path(log_dir).glob("*.log")):
        for text in f.read_text(errors="replace").splitlines():
            i = text.find("intake: ")
            if i >= 0:
                line = text[i:].strip()
    return line


def ground_truth_record(truth, scene=None) -> dict:
    """The room, the GT objects, ``in_full_view`` (ids of objects once entirely inside a recorded camera view,
    ``queries.objects_in_full_view``) and, given the regenerated scene, ``seen_fraction`` (id -> best share of the
    object's silhouette visible in one recorded image, occlusion included: ``visibility.seen_fractions``)."""
    from lang3d_ros.evaluation.queries import objects_in_full_view
    from lang3d_ros.evaluation.visibility import seen_fractions

    lx, ly, lz = truth.room_size_m
    out = {
        "room": {"min_xyz": [-lx / 2, -ly / 2, 0.0], "max_xyz": [lx / 2, ly / 2, lz]},
        "objects": [o.to_dict() for o in truth.objects],
        "in_full_view": objects_in_full_view(truth),
    }
    if scene is not None and truth.intrinsics is not None and len(truth.T_world_cams):
        seen = seen_fractions(scene, truth.T_world_cams, truth.intrinsics)
        out["seen_fraction"] = {str(i): round(float(f), 4) for i, f in sorted(seen.items())}
    if scene is not None:
        out["footprint_xy"] = footprints_xy(scene)
    return out


def footprints_xy(scene, max_height_m: float | None = None) -> dict[str, list[list[float]]]:
    """id -> the convex hull (counter-clockwise xy, 1 mm) of the object's mesh vertices below ``max_height_m``
    (the metrics' ``obstacle_max_height_m``): the floor area it blocks for navigation checks. Objects without such
    vertices are left out (their box is used)."""
    from scipy.spatial import ConvexHull, QhullError

    from lang3d_ros.evaluation.metrics import DEFAULT_SETTINGS

    top = float(DEFAULT_SETTINGS["obstacle_max_height_m"] if max_height_m is None else max_height_m)
    out = {}
    for o in scene.objects:
        if o.mesh is None:
            continue
        v = np.asarray(o.mesh.vertices, dtype=np.float64)
        v = v[v[:, 2] < top, :2]
        try:
            hull = v[ConvexHull(v).vertices] if len(v) >= 3 else None
        except QhullError:  # degenerate (a flat sliver): the box stands in
            hull = None
        if hull is not None:
            out[str(o.instance_id)] = np.round(hull, 3).tolist()
    return out


def evaluate(
    bag: Path, gt_path: Path, queries: QuerySet, out_dir: Path, opts: EvalOptions | None = None
) -> tuple[dict, dict]:
    """Run the whole evaluation; writes raw.json, results.json, map.l3dmap, heatmaps.npz under out_dir and
    returns (raw, results)."""
    from lang3d_ros.datasets.synthetic import load_ground_truth

    opts = opts or EvalOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = load_ground_truth(gt_path)
    scene = truth.regenerate_scene()
    params = merged_params(gt_path, opts.config_files, opts.overrides)
    params.setdefault("ros", {})["map_dir"] = str(out_dir.resolve())  # SaveMap writes only inside the map folder
    raw = {
        "format": RAW_FORMAT,
        "format_version": RAW_FORMAT_VERSION,
        "run": {
            "bag": str(Path(bag).resolve()),
            "ground_truth": str(Path(gt_path).resolve()),
            "rate": opts.rate,
            "started_unix_s": time.time(),
            "host": platform.node(),
            "python": platform.python_version(),
            "params": params,
        },
        "settings": dict(
            DEFAULT_SETTINGS,
            robot_radius_m=float(
                params.get("navigation", {}).get("robot_radius_m", DEFAULT_SETTINGS["robot_radius_m"])
            ),
        ),
        "ground_truth": ground_truth_record(truth, scene),
        "start_xy_yaw": list(queries.start_xy_yaw),
        "standoff_m": queries.standoff_m,
        "queries": [],
        "status_calls": [],
        "mapping": {"errors": []},
        "memory": {},
        "views": [],
    }
    session = _Session(out_dir, params, opts)
    map_path = out_dir / "map.l3dmap"
    try:
        raw["mapping"]["initial_status"] = first = session.status()
        if first["frames_received"] or first["num_points"]:
            raise RuntimeError(
                f"the mapper answering on ROS domain {session.domain} already holds {first['num_points']} points: "
                "another process uses this domain (its services answered before ours started); run again"
            )
        t0 = time.monotonic()
        from lang3d_ros.mapping.config import MappingConfig

        queue = int(params.get("mapping", {}).get("frame_queue_size", MappingConfig().frame_queue_size))
        max_pending = min(opts.max_pending_frames, max(queue, 1))  # before the mapper's own queue drops
        raw["mapping"]["bag_counts"] = replay(session, Path(bag), opts.rate, opts.progress, max_pending)
        raw["mapping"]["replay_s"] = time.monotonic() - t0
        n_img = max(raw["mapping"]["bag_counts"].values(), default=0)
        raw["mapping"].update(wait_for_mapping(session, opts, n_img))
        received = raw["mapping"]["final_status"].get("frames_received") or 0
        if received > n_img:
            raw["mapping"]["errors"].append(
                f"the mapper received {received} frames from a bag of {n_img} images: another publisher on ROS "
                f"domain {session.domain}; the figures of this run are not reliable"
            )
        raw["queries"] = run_queries(session, queries, opts)
        raw["mapping"]["after_queries_status"] = session.status()
        raw["save_map"] = save_map(session, map_path, opts)
        raw["memory"]["mapper_vmhwm_mb"] = procs.peak_memory_mb(session.mapper.pid)
        raw["memory"]["mapper_pid"] = session.mapper.pid
    finally:
        raw["status_calls"] = session.status_calls
        raw["mapper_exit_code"] = session.close()
        raw["mapping"]["intake_summary"] = intake_summary_line(out_dir / "logs")
    if raw.get("save_map", {}).get("success"):
        lmap, cfg = load_map_for_eval(map_path, params)
        raw["views"] = measure_views(lmap, cfg, truth, scene, opts, out_dir / "heatmaps.npz")
        raw["views_gaussians"] = measure_map_gaussians(map_path, lmap, cfg, truth, scene, raw["views"], opts)
    else:
        raw["mapping"]["errors"].append(f"map not saved ({raw.get('save_map', {}).get('message')}): no rendered views")
    results = recompute(raw)
    (out_dir / "raw.json").write_text(json.dumps(raw, indent=1))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return raw, results
