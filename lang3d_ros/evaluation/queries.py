"""Evaluation queries: the file format (JSON or YAML) and a generator that writes one from a ground-truth file.

Format ``lang3d_ros.eval_queries`` version 1 (docs/EVALUATION.md)::

    format: lang3d_ros.eval_queries
    format_version: 1
    start_xy_yaw: [x_m, y_m, yaw_rad]   # robot pose (map frame) sent with Navigate / Ask requests
    standoff_m: 0.6                     # default standoff for navigate queries
    queries:
      - {id: g00, service: ground,   kind: label,     text: "the sofa",              target_ids: [3]}
      - {id: g01, service: ground,   kind: attribute, text: "the red mug",           target_ids: [7]}
      - {id: g02, service: ground,   kind: relation,  text: "the mug on the table",  target_ids: [7]}
      - {id: g03, service: ground,   kind: resting,   text: "the laptop",            target_ids: [9]}
      - {id: n00, service: navigate, kind: label,     text: "take me to the sofa",   target_ids: [3], standoff_m: 0.6}
      - {id: a00, service: ask,      kind: relation,  text: "where is the mug on the table?", target_ids: [7]}
      - {id: a01, service: ask,      kind: count,     text: "how many chairs are there?", target_ids: [4, 5],
         expected_count: 2}

Kinds: ``label`` a floor object by its unique label; ``attribute`` colour + label among objects that share the
label; ``relation`` "the X on the Y" (exactly one X rests on a Y); ``resting`` an object resting on another,
asked by its unique plain label (the case where a map boxes it together with its host); ``count`` "how many"
in several phrasings (labels present once, several times, and absent ones: 0); ``where`` where-is questions.
A query is answered correctly when its top object's box overlaps a target's GT box (Acc@0.25 / Acc@0.5), or for
``count`` questions when the first number in the answer (digits or a number word; "no"/"none" = 0) equals
``expected_count`` (a count's ``target_ids``, optional, are the instances counted). The generator only emits
queries whose answer is unique in the GT scene; it cannot judge whether a phrase is natural, and its relational
queries use the support relation ("on") only, the one relation the GT stores exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lang3d_ros.llm.labels import plural

QUERIES_FORMAT = "lang3d_ros.eval_queries"
QUERIES_FORMAT_VERSION = 1
SERVICES = ("ground", "navigate", "ask")
KINDS = ("label", "attribute", "relation", "resting", "count", "where")
GROUND_KINDS = ("label", "attribute", "relation", "resting")
COUNT_PHRASINGS = (
    "how many {p} are there?",
    "count the {p}",
    "how many {p} are in the room?",
    "what is the number of {p} here?",
    "how many {p} can you see?",
)


@dataclass
class EvalQuery:
    id: str
    service: str  # ground | navigate | ask
    kind: str  # label | attribute | relation | resting | count | where
    text: str
    target_ids: list[int] = field(default_factory=list)
    expected_count: int | None = None
    standoff_m: float | None = None

    def validate(self) -> "EvalQuery":
        if self.service not in SERVICES:
            raise ValueError(f"query {self.id}: service {self.service!r} is not one of {SERVICES}")
        if self.kind not in KINDS:
            raise ValueError(f"query {self.id}: kind {self.kind!r} is not one of {KINDS}")
        if not self.text.strip():
            raise ValueError(f"query {self.id}: empty text")
        if self.kind == "count":
            if self.expected_count is None or self.expected_count < 0:
                raise ValueError(f"query {self.id}: a count question needs expected_count >= 0")
        elif not self.target_ids:
            raise ValueError(f"query {self.id}: needs target_ids (GT instance ids)")
        return self


@dataclass
class QuerySet:
    queries: list[EvalQuery]
    start_xy_yaw: tuple[float, float, float] = (0.0, 0.0, 0.0)
    standoff_m: float = 0.6

    def to_dict(self) -> dict:
        return {
            "format": QUERIES_FORMAT,
            "format_version": QUERIES_FORMAT_VERSION,
            "start_xy_yaw": [float(v) for v in self.start_xy_yaw],
            "standoff_m": float(self.standoff_m),
            "queries": [{k: v for k, v in asdict(q).items() if v is not None} for q in self.queries],
        }

    def save(self, path) -> Path:
        path = Path(path)
        data = self.to_dict()
        text = yaml.safe_dump(data, sort_keys=False) if path.suffix in (".yaml", ".yml") else json.dumps(data, indent=1)
        path.write_text(text)
        return path


def load_queries(path) -> QuerySet:
    """Read a queries file (JSON, or YAML by suffix .yaml/.yml); ValueError names what is wrong."""
    path = Path(path)
    text = path.read_text()
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a queries file ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != QUERIES_FORMAT:
        raise ValueError(f"{path}: not a {QUERIES_FORMAT} file")
    if data.get("format_version") != QUERIES_FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {data.get('format_version')} is not {QUERIES_FORMAT_VERSION}")
    try:
        queries = [EvalQuery(**q).validate() for q in data.get("queries", [])]
    except TypeError as exc:
        raise ValueError(f"{path}: malformed query entry ({exc})") from exc
    ids = [q.id for q in queries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: query ids are not unique")
    start = tuple(float(v) for v in data.get("start_xy_yaw", (0.0, 0.0, 0.0)))
    if len(start) != 3 or not np.all(np.isfinite(start)):
        raise ValueError(f"{path}: start_xy_yaw must be 3 finite numbers")
    return QuerySet(queries, start, float(data.get("standoff_m", 0.6)))


def start_pose_from_truth(
    truth, robot_radius_m: float | None = None, obstacle_max_height_m: float | None = None
) -> tuple[float, float, float]:
    """A robot pose on free floor, facing the room centre: the latest recorded camera position whose floor point
    keeps ``robot_radius_m`` from the walls and from the footprint of every object whose bottom is below
    ``obstacle_max_height_m`` (the evaluation's obstacles); a camera carried 1.4 m high passes over tables, where
    no robot base fits. When no camera position is free, the free floor point (2 cm grid) nearest to the last
    one; the room centre when the GT has no poses or no free floor. Defaults: the scorer's settings."""
    if len(truth.T_world_cams) == 0:
        return (0.0, 0.0, 0.0)
    from lang3d_ros.evaluation.metrics import DEFAULT_SETTINGS
    from lang3d_ros.navigation.goal import distance_to_footprint

    if robot_radius_m is None:
        robot_radius_m = float(DEFAULT_SETTINGS["robot_radius_m"])
    if obstacle_max_height_m is None:
        obstacle_max_height_m = float(DEFAULT_SETTINGS["obstacle_max_height_m"])

    half = np.asarray(truth.room_size_m[:2], dtype=np.float64) / 2.0
    boxes = [o.obb for o in truth.objects if float(o.obb.min_xyz[2]) < obstacle_max_height_m]

    def free(xy: np.ndarray) -> np.ndarray:
        ok = np.all(np.abs(xy) <= half - robot_radius_m, axis=1)
        for b in boxes:
            ok &= distance_to_footprint(xy, b) >= robot_radius_m
        return ok

    cams = np.asarray([T[:2, 3] for T in truth.T_world_cams], dtype=np.float64)
    ok = np.flatnonzero(free(cams))
    if len(ok):
        x, y = cams[ok[-1]]
    else:
        gx, gy = np.meshgrid(np.arange(-half[0], half[0], 0.02), np.arange(-half[1], half[1], 0.02))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        grid = grid[free(grid)]
        if len(grid) == 0:
            return (0.0, 0.0, 0.0)
        x, y = grid[np.argmin(np.linalg.norm(grid - cams[-1], axis=1))]
    return (float(x), float(y), float(np.arctan2(-y, -x)))


def objects_in_full_view(truth, min_depth_m: float = 0.1) -> list[int]:
    """GT instance ids whose whole box (its 8 corners) lay inside the image, in front of the camera, in at least one
    recorded frame: the objects a map could have seen whole. Field of view only: occlusion is not modelled (a toy
    car behind a pillow counts as in view). [] without poses or intrinsics."""
    K = truth.intrinsics
    if K is None or len(truth.T_world_cams) == 0:
        return []
    T_cam_world = np.linalg.inv(np.asarray(truth.T_world_cams, dtype=np.float64))  # (F, 4, 4)
    out = []
    for o in truth.objects:
        c = np.asarray(o.obb.corners(), dtype=np.float64)  # (8, 3)
        p = np.einsum("fij,kj->fki", T_cam_world[:, :3, :3], c) + T_cam_world[:, None, :3, 3]  # (F, 8, 3)
        z = p[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = K.fx * p[..., 0] / z + K.cx
            v = K.fy * p[..., 1] / z + K.cy
        inside = (z > min_depth_m) & (u >= 0) & (u <= K.width - 1) & (v >= 0) & (v <= K.height - 1)
        if np.any(np.all(inside, axis=1)):
            out.append(int(o.instance_id))
    return out


def generate_queries(
    truth,
    max_ground: int = 60,
    max_navigate: int = 8,
    max_ask: int = 30,
    standoff_m: float = 0.6,
    absent_labels: int = 2,
) -> QuerySet:
    """Queries with unique answers from a GroundTruth, every kind interleaved so a small budget still covers all:
    Ground (label / attribute / relation / resting, see the module docstring); Navigate to floor objects named by a
    unique label or a unique colour + label; Ask: where-is with the support relation, counts of every label in the
    scene (a second phrasing for repeated labels) and of ``absent_labels`` catalogue labels the scene lacks (0),
    then where-is by label. The defaults take every unique query a 10-20 object room offers."""
    from lang3d_ros.datasets.synthetic import LABELS

    objs = truth.objects
    by_id = {o.instance_id: o for o in objs}
    n_label = {lab: sum(o.label == lab for o in objs) for lab in {o.label for o in objs}}

    def n_color(o) -> int:
        return sum(x.label == o.label and x.color_name == o.color_name for x in objs)

    pools: dict[str, list[tuple[str, object]]] = {k: [] for k in GROUND_KINDS}
    for o in objs:
        if n_label[o.label] == 1:
            pools["label" if o.support_id not in by_id else "resting"].append((f"the {o.label}", o))
        elif n_color(o) == 1:
            pools["attribute"].append((f"the {o.color_name} {o.label}", o))
        s = by_id.get(o.support_id)
        if s is not None:
            same = [
                x for x in objs if x.label == o.label and x.support_id in by_id and by_id[x.support_id].label == s.label
            ]
            if len(same) == 1:
                pools["relation"].append((f"the {o.label} on the {s.label}", o))
    ground: list[tuple[str, str, object]] = []
    while len(ground) < max_ground and any(pools.values()):
        for kind in GROUND_KINDS:
            if pools[kind] and len(ground) < max_ground:
                text, o = pools[kind].pop(0)
                ground.append((kind, text, o))
    out = [EvalQuery(f"g{i:02d}", "ground", kind, text, [o.instance_id]) for i, (kind, text, o) in enumerate(ground)]
    floor = sorted((o for o in objs if o.support_id not in by_id), key=lambda o: -o.aabb.volume)
    nav = [(f"the {o.label}", o) for o in floor if n_label[o.label] == 1]
    nav += [(f"the {o.color_name} {o.label}", o) for o in floor if n_label[o.label] > 1 and n_color(o) == 1]
    out += [
        EvalQuery(
            f"n{i:02d}",
            "navigate",
            "label" if text.count(" ") == 1 else "attribute",
            f"take me to {text}",
            [o.instance_id],
            standoff_m=standoff_m,
        )
        for i, (text, o) in enumerate(nav[:max_navigate])
    ]
    asks: list[EvalQuery] = []
    for text, o in [(g[1], g[2]) for g in ground if g[0] == "relation"][: max_ask // 4]:
        asks.append(EvalQuery("", "ask", "relation", f"where is {text}?", [o.instance_id]))
    present = sorted(n_label, key=lambda lab: (-n_label[lab], lab))
    absent = sorted(set(LABELS) - set(n_label))
    if absent and absent_labels:  # spread over the catalogue, deterministic
        absent = [absent[int(i)] for i in np.linspace(0, len(absent) - 1, absent_labels).round()]
    else:
        absent = []
    counts = [(lab, n_label[lab]) for lab in present] + [(lab, 0) for lab in dict.fromkeys(absent)]
    counts += [(lab, n_label[lab]) for lab in present if n_label[lab] >= 2]  # repeated labels: a second phrasing
    for k, (lab, n) in enumerate(counts[: max(0, max_ask - len(asks) - 2)]):
        phrase = COUNT_PHRASINGS[k % len(COUNT_PHRASINGS)].format(p=plural(lab))
        ids = [o.instance_id for o in objs if o.label == lab]  # what is counted (scored on observed subsets)
        asks.append(EvalQuery("", "ask", "count", phrase, ids, expected_count=n))
    for lab in sorted(lab for lab, n in n_label.items() if n == 1)[: max(0, max_ask - len(asks))]:
        target = next(o.instance_id for o in objs if o.label == lab)
        asks.append(EvalQuery("", "ask", "where", f"where is the {lab}?", [target]))
    for i, q in enumerate(asks):
        q.id = f"a{i:02d}"
    return QuerySet([q.validate() for q in out + asks], start_pose_from_truth(truth), standoff_m)
