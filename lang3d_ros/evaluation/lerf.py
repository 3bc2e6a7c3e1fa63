"""The LERF dataset's evaluation labels and scenes, and ``lang3d eval-lerf`` (LangSplat's 2D table from a map).

Labels (one JSON per evaluated frame) in either layout:
- labelme: ``{"imagePath": "frame_00041.jpg", "imageHeight": H, "imageWidth": W,
  "shapes": [{"label": "stuffed bear", "points": [[x, y], ...], "shape_type": "polygon"}]}``
- LERF-OVS (as released with LangSplat): ``{"info": {"name": "frame_00041.jpg", "height": H, "width": W},
  "objects": [{"category": "stuffed bear", "bbox": [x1, y1, x2, y2], "segmentation": [[x, y], ...]}]}``
Several polygons with one label are one mask (union) with one box each. Scenes: nerfstudio ``transforms.json``
(``fl_x fl_y cx cy w h`` at the top or per frame, ``frames[].file_path``, ``frames[].transform_matrix`` =
camera-to-world in the OpenGL convention, converted here to the optical frame). What it cannot do: undo
nerfstudio's dataparser transform (the map must be in transforms.json's world frame), or read COLMAP models.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lang3d_ros.geometry.camera import Intrinsics

log = logging.getLogger(__name__)

GL_TO_OPTICAL = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera (x right, y up, z back) -> optical (y down, z fwd)


@dataclass
class LabelledObject:
    mask: np.ndarray  # (H,W) bool, union of the label's polygons
    boxes_xyxy: np.ndarray  # (K,4) pixel boxes, one per polygon


@dataclass
class FrameLabels:
    image_name: str
    width: int
    height: int
    objects: dict[str, LabelledObject]


def polygon_mask(points_xy, height: int, width: int) -> np.ndarray:
    """Polygon vertices (pixel x, y) -> (H,W) bool mask (PIL's polygon fill, outline included)."""
    from PIL import Image, ImageDraw

    pts = [(float(x), float(y)) for x, y in np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)]
    if len(pts) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(pts)}")
    img = Image.new("1", (int(width), int(height)), 0)
    ImageDraw.Draw(img).polygon(pts, fill=1, outline=1)
    return np.array(img, dtype=bool)


def _bbox_of(points_xy) -> list[float]:
    p = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return [float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())]


def read_frame_labels(path) -> FrameLabels:
    """One label JSON (labelme or LERF-OVS layout) -> FrameLabels; ValueError names what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if "shapes" in data:
        name, h, w = data.get("imagePath", path.stem + ".jpg"), data["imageHeight"], data["imageWidth"]
        items = [
            (s["label"], s["points"], _bbox_of(s["points"]))
            for s in data["shapes"]
            if s.get("shape_type", "polygon") == "polygon"
        ]
    elif "objects" in data and "info" in data:
        info = data["info"]
        name, h, w = info["name"], info["height"], info["width"]
        items = [
            (o["category"], o["segmentation"], list(o.get("bbox") or _bbox_of(o["segmentation"])))
            for o in data["objects"]
        ]
    else:
        raise ValueError(f"{path}: neither a labelme file (shapes) nor a LERF-OVS label file (info + objects)")
    objects: dict[str, LabelledObject] = {}
    for label, poly, box in items:
        m = polygon_mask(poly, h, w)
        if label in objects:
            prev = objects[label]
            objects[label] = LabelledObject(
                prev.mask | m, np.vstack([prev.boxes_xyxy, np.asarray(box, dtype=np.float64).reshape(1, 4)])
            )
        else:
            objects[label] = LabelledObject(m, np.asarray(box, dtype=np.float64).reshape(1, 4))
    return FrameLabels(Path(name).name, int(w), int(h), objects)


def read_label_folder(folder) -> list[FrameLabels]:
    """Every *.json of a label folder, sorted by name (a scene's folder in lerf_ovs/label)."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise ValueError(f"{folder}: no label JSON files")
    return [read_frame_labels(f) for f in files]


@dataclass
class SceneCamera:
    T_world_cam: np.ndarray  # optical frame
    intrinsics: Intrinsics


def read_transforms(scene_dir) -> dict[str, SceneCamera]:
    """nerfstudio transforms.json -> {image file name: camera (optical-frame pose, intrinsics)}."""
    path = Path(scene_dir) / "transforms.json" if Path(scene_dir).is_dir() else Path(scene_dir)
    data = json.loads(path.read_text())
    out = {}
    for fr in data.get("frames", []):
        g = {k: fr.get(k, data.get(k)) for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
        if any(v is None for v in g.values()):
            raise ValueError(
                f"{path}: frame {fr.get('file_path')} lacks intrinsics {[k for k, v in g.items() if v is None]}"
            )
        K = Intrinsics(
            fx=float(g["fl_x"]),
            fy=float(g["fl_y"]),
            cx=float(g["cx"]),
            cy=float(g["cy"]),
            width=int(g["w"]),
            height=int(g["h"]),
        )
        T = np.asarray(fr["transform_matrix"], dtype=np.float64).reshape(4, 4) @ GL_TO_OPTICAL
        out[Path(fr["file_path"]).name] = SceneCamera(T, K)
    if not out:
        raise ValueError(f"{path}: no frames")
    return out


def _camera_for(cams: dict[str, SceneCamera], fl: FrameLabels) -> SceneCamera:
    cam = cams.get(fl.image_name) or next(
        (c for n, c in cams.items() if Path(n).stem == Path(fl.image_name).stem), None
    )
    if cam is None:
        raise ValueError(f"label frame {fl.image_name} is not in transforms.json")
    K = cam.intrinsics
    if (K.width, K.height) != (fl.width, fl.height):
        K = K.scaled(fl.width, fl.height)
    return SceneCamera(cam.T_world_cam, K)


def evaluate_lerf(
    lmap,
    labels: list[FrameLabels],
    cams: dict[str, SceneCamera],
    point_size_m: float,
    progress: bool = True,
    field=None,
) -> dict:
    """Render the map's relevancy per labelled frame and label -> raw record {"views": [...]} (metrics.score_views).
    With ``field`` (``gaussians.evaluation.MapField``, the map's trained language Gaussians) the same frames and labels
    are also rendered from the Gaussians: ``"views_gaussians"`` in the same layout."""
    from tqdm import tqdm

    from lang3d_ros.evaluation.lerf_protocol import measure_levels
    from lang3d_ros.evaluation.render import gather, point_index_image

    xyz = lmap.points.points_xyz.cpu().numpy()
    rel_cache: dict[str, np.ndarray] = {}
    views, gviews = [], []
    for i, fl in enumerate(tqdm(labels, desc="lerf frames", unit="frame", disable=not progress)):
        entry = {"view": i, "image": fl.image_name, "queries": []}
        try:
            cam = _camera_for(cams, fl)
        except ValueError as exc:
            entry["queries"] = [
                {"label": lab, "gt_boxes_xyxy": o.boxes_xyxy.tolist(), "levels": [], "error": str(exc)}
                for lab, o in fl.objects.items()
            ]
            views.append(entry)
            if field is not None:
                gviews.append(entry)
            continue
        if field is not None:
            gviews.append({"view": i, "image": fl.image_name, "queries": _gaussian_queries(field, fl, cam)})
        index = point_index_image(xyz, cam.T_world_cam, cam.intrinsics, point_size_m=point_size_m)
        for lab, obj in sorted(fl.objects.items()):
            q = {
                "label": lab,
                "gt_pixels": int(obj.mask.sum()),
                "gt_boxes_xyxy": obj.boxes_xyxy.tolist(),
                "levels": [],
                "error": None,
            }
            try:
                if lab not in rel_cache:
                    rel_cache[lab] = lmap.relevancy_by_level(lab)[0]
                q["levels"] = [m.to_dict() for m in measure_levels(gather(rel_cache[lab], index), obj.mask)]
            except Exception as exc:
                q["error"] = f"{type(exc).__name__}: {exc}"
            entry["queries"].append(q)
        views.append(entry)
    raw = {"format": "lang3d_ros.lerf_raw", "format_version": 1, "views": views}
    if field is not None:
        raw["views_gaussians"] = gviews
    return raw


def _gaussian_queries(field, fl: FrameLabels, cam: SceneCamera) -> list[dict]:
    """Per label of one labelled frame: the LERF per-level measurements of relevancy rendered from the Gaussians."""
    from lang3d_ros.evaluation.lerf_protocol import measure_levels

    out = []
    try:  # one render and decode for all labels of the frame
        rels, err = field.relevancy_levels_many(sorted(fl.objects), cam.T_world_cam, cam.intrinsics), None
    except Exception as exc:  # the frame's pairs are misses, recorded with the reason
        rels, err = {}, f"{type(exc).__name__}: {exc}"
    for lab, obj in sorted(fl.objects.items()):
        q = {
            "label": lab,
            "gt_pixels": int(obj.mask.sum()),
            "gt_boxes_xyxy": obj.boxes_xyxy.tolist(),
            "levels": [],
            "error": err,
        }
        if err is not None:
            out.append(q)
            continue
        try:
            rel = rels[lab]
            q["levels"] = [m.to_dict() for m in measure_levels(rel, obj.mask)]
        except Exception as exc:  # a failed frame-label pair is a miss, recorded with its reason
            q["error"] = f"{type(exc).__name__}: {exc}"
        out.append(q)
    return out


def add_lerf_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval-lerf",
        help="LERF localization accuracy and mIoU of a map file (LangSplat's 2D table)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scene", type=Path, help="scene folder with transforms.json (nerfstudio layout)")
    p.add_argument(
        "--labels", type=Path, required=True, help="folder of the scene's label JSONs (lerf_ovs/label/<scene>)"
    )
    p.add_argument(
        "--map", type=Path, required=True, help="lang3d map file of the scene (in transforms.json's world frame)"
    )
    p.add_argument(
        "--config", type=Path, action="append", default=[], help="params YAML (text encoder the map was built with)"
    )
    p.add_argument("--out", type=Path, default=Path("lang3d_eval_lerf"))
    p.add_argument(
        "--field",
        choices=["points", "gaussians", "both"],
        default="both",
        help="besides the points' splats (always scored), render the map's language Gaussians: gaussians "
        "(an error when the map holds none) or both (when it holds them; the default)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_lerf)


def run_lerf(args: argparse.Namespace) -> int:
    from lang3d_ros.config import load_config
    from lang3d_ros.evaluation.metrics import score_views
    from lang3d_ros.mapping.language_map import LanguageMap
    from lang3d_ros.semantics.backends import build_text_encoder

    cfg = load_config(*args.config)
    lmap = LanguageMap(cfg, build_text_encoder(cfg.semantics), device=cfg.fusion.device)
    lmap.load(str(args.map))
    field = None
    if args.field in ("gaussians", "both"):
        from lang3d_ros.gaussians.evaluation import load_map_field

        field = load_map_field(args.map, lmap.text_encoder, cfg, device=cfg.gaussians.device)
        if field is None and args.field == "gaussians":
            raise ValueError(f"{args.map} holds no language Gaussians (map it with mapping.train_gaussians)")
    raw = evaluate_lerf(
        lmap,
        read_label_folder(args.labels),
        read_transforms(args.scene),
        cfg.fusion.voxel_size_m,
        not args.no_progress,
        field=field,
    )
    raw["run"] = {
        "scene": str(args.scene.resolve()),
        "labels": str(args.labels.resolve()),
        "map": str(args.map.resolve()),
    }
    results = score_views(raw)
    if field is not None:
        results["gaussians"] = score_views({"views": raw["views_gaussians"]})
        g = results["gaussians"]
        print(
            f"Gaussians: LERF localization accuracy {g['localization_accuracy']:.3f}, mIoU {g['miou']:.3f} "
            f"({g['n']} frame-label pairs)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lerf_raw.json").write_text(json.dumps(raw, indent=1))
    (args.out / "lerf_results.json").write_text(json.dumps(results, indent=1))
    print(
        f"LERF localization accuracy {results['localization_accuracy']:.3f}, mIoU {results['miou']:.3f} "
        f"({results['n']} frame-label pairs); written to {args.out}"
    )
    return 0
