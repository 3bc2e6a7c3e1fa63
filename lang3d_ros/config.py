"""The whole configuration: one dataclass per area (each area's ``config.py`` holds its defaults), composed here.

YAML files (config/*.yaml) override the defaults. They use the ROS 2 parameter-file layout, so the same file
feeds ``ros2 launch`` / ``--params-file`` and the library::

    /**:
      ros__parameters:
        fusion:
          voxel_size_m: 0.02
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lang3d_ros.config_base import ConfigError, from_mapping, to_mapping
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.grounding.config import ExtractionConfig, GroundingConfig
from lang3d_ros.instances.config import InstanceConfig
from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.mapping.config import MappingConfig
from lang3d_ros.navigation.config import NavigationConfig
from lang3d_ros.ros.config import AutosaveConfig, DiagnosticsConfig
from lang3d_ros.semantics.config import SemanticsConfig


@dataclass
class FramesConfig:
    """Frame ids (REP 105)."""

    map_frame: str = "map"
    """Frame of the map, of every answer and of published clouds/markers."""
    robot_frame: str = "base_link"
    """The robot body, for navigation start poses from TF / odometry."""
    camera_frame: str = ""
    """Optical frame of the camera; "" = take it from the image headers."""


@dataclass
class RosConfig:
    """Topics, QoS and publishing of the nodes (names are relative to the node namespace unless absolute)."""

    color_topic: str = "/camera/color/image_raw"
    """sensor_msgs/Image rgb8|bgr8|rgba8|bgra8|mono8."""
    depth_topic: str = "/camera/depth/image_rect_raw"
    """sensor_msgs/Image 16UC1 (mm) | 32FC1 (m), registered to colour (RealSense:
    /camera/aligned_depth_to_color/image_raw)."""
    camera_info_topic: str = "/camera/color/camera_info"
    """sensor_msgs/CameraInfo of the colour camera (rectified: zero distortion)."""
    pose_topic: str = "/camera/pose"
    """geometry_msgs/PoseStamped of the camera optical frame in the map frame; "" = off."""
    odom_topic: str = ""
    """nav_msgs/Odometry of the robot (child frame = robot_frame) in the map frame; "" = off."""
    use_tf: bool = False
    """Look up map -> camera optical frame in TF at each image stamp (needs tf2_ros)."""
    camera_mount_xyz_rpy: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, -1.5707963, 0.0, -1.5707963])
    """T_robot_camera (m, rad) for odom poses."""
    depth_scale_m: float = 0.001
    """Metres per unit of 16UC1 depth (REP 118: millimetres)."""
    sensor_qos_depth: int = 30
    """History depth of the image and camera_info subscriptions (volatile): messages that arrived and the executor
    has not taken yet. More than that and a best-effort subscription loses the oldest: with 5, a mapper on a loaded
    2-core host received 15-21 of a 24-image burst and 273-297 of 300 colour images at 30 Hz (640x480). Memory:
    up to this many images per stream while the node is behind."""
    pose_qos_depth: int = 100
    """History depth of the pose / odometry subscription (volatile): poses are small and come faster than images
    (odometry at 100-200 Hz); with 5, that mapper received 379-525 of 600 poses at 60 Hz."""
    sensor_qos_reliability: Literal["best_effort", "reliable"] = "best_effort"
    """Reliability of the sensor subscriptions. best_effort matches every camera driver (a reliable subscription gets
    nothing from a best-effort publisher); reliable suits bag replay (its publishers are reliable): no image is lost
    in transport, so a replay fuses the frames the bag holds."""
    cloud_topic: str = "lang3d/map_cloud"
    """sensor_msgs/PointCloud2 of the fused map (x y z rgb)."""
    cloud_period_s: float = 2.0
    """Publish period of the map cloud; 0 = never."""
    cloud_max_points: int = 200000
    """The published cloud is subsampled to at most this many points."""
    status_topic: str = "lang3d/map_status"
    """Lang3d_ros/MapStatus."""
    status_period_s: float = 1.0
    """Publish period of MapStatus (s)."""
    markers_topic: str = "lang3d/markers"
    """visualization_msgs/MarkerArray of the last answers."""
    grid_topic: str = "lang3d/occupancy_grid"
    """nav_msgs/OccupancyGrid used for navigation goals (transient local)."""
    path_topic: str = "lang3d/path"
    """nav_msgs/Path of the last navigation answer."""
    goal_topic: str = "lang3d/goal"
    """geometry_msgs/PoseStamped of the last navigation answer."""
    map_dir: str = "~/.ros/lang3d_maps"
    """Where SaveMap writes when given no path."""
    load_map: str = ""
    """Serve this map file at start-up (query server without mapping)."""
    ground_truth_file: str = ""
    """Synthetic scenes only: ground truth JSON for the ground_truth semantics backend."""
    llm_preload: bool = True
    """Load the 3D-LLM in the background at start-up (the parser answers meanwhile)."""
    autostart: bool = True
    """Lifecycle nodes configure and activate themselves at start-up; false = wait for a lifecycle manager (Nav2's
    lifecycle_manager, or lifecycle_msgs/ChangeState calls)."""
    service_qos_depth: int = 100
    """Request queue depth of every lang3d service (reliable): requests beyond it, while all are pending, are lost."""
    executor_threads: int = 6
    """Threads of the node's executor: sensor callbacks, timers, queries, map files and status each get their own
    mutually exclusive group, so queries never hold the thread that sensor intake needs."""
    duplicate_check_s: float = 2.0
    """At start-up, look this long for another node of the same name and namespace; one found = refuse to start."""
    objects_topic: str = "lang3d/objects"
    """lang3d_ros/DetectedObjectArray of the map's instances (transient local), republished when they change."""
    object_markers_topic: str = "lang3d/object_markers"
    """visualization_msgs/MarkerArray of the map's instances: a box and a text label per instance."""
    objects_period_s: float = 2.0
    """How often the instance table is checked for changes (s); 0 = never published."""
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    """/diagnostics contents and thresholds."""
    autosave: AutosaveConfig = field(default_factory=AutosaveConfig)
    """Periodic and shutdown saves of the live map."""


@dataclass
class Lang3DConfig:
    frames: FramesConfig = field(default_factory=FramesConfig)
    """Frame ids (REP 105)."""
    ros: RosConfig = field(default_factory=RosConfig)
    """Topics, QoS and files of the nodes."""
    mapping: MappingConfig = field(default_factory=MappingConfig)
    """The online mapping loop."""
    semantics: SemanticsConfig = field(default_factory=SemanticsConfig)
    """2D semantics: SAM masks at three levels and CLIP per mask."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    """PointFusion of RGB-D frames."""
    gaussians: GaussianConfig = field(default_factory=GaussianConfig)
    """Language Gaussians (LangSplat) trained beside mapping."""
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    """Answering text queries on the map."""
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    """Labelling the map's objects."""
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    """Online 3D instances (segments) fused from keyframe masks."""
    navigation: NavigationConfig = field(default_factory=NavigationConfig)
    """Occupancy grid, standoff goals and paths."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """The 3D-LLM that reads the scene (and its parser fallback)."""


def parameters_from_yaml(path: str | Path, node_name: str | None = None) -> dict:
    """The nested ``ros__parameters`` mapping of a ROS 2 parameter file (``/**`` merged with ``node_name``)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    merged: dict = {}
    for key in ("/**", node_name, f"/{node_name}" if node_name else None):
        if key and key in doc:
            params = (doc[key] or {}).get("ros__parameters", {})
            _deep_update(merged, params)
    if not merged and "ros__parameters" not in str(doc)[:2000]:
        merged = doc  # a plain nested mapping is accepted too
    return merged


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def load_config(*paths: str | Path, overrides: dict | None = None, node_name: str | None = None) -> Lang3DConfig:
    """Defaults <- each YAML file in order <- ``overrides`` (nested dict). Unknown keys raise ConfigError."""
    data: dict = {}
    for p in paths:
        _deep_update(data, parameters_from_yaml(p, node_name))
    if overrides:
        _deep_update(data, overrides)
    return from_mapping(Lang3DConfig, data)


def _drop_none(d):
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


def dump_config(config: Lang3DConfig) -> str:
    """The config as a ROS 2 parameter file. Unset (None) values are left out: parameter files cannot hold them,
    and leaving them out keeps their default."""
    return yaml.safe_dump({"/**": {"ros__parameters": _drop_none(to_mapping(config))}}, sort_keys=False)


# ------------------------------------------------------------------------------- flat parameter view
def field_docs(cls: type) -> dict[str, str]:
    """{field name: the docstring written under it} for a dataclass (nerfstudio style), read from its source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out = {}
    for st, nxt in zip(body, body[1:]):
        if (
            isinstance(st, ast.AnnAssign)
            and isinstance(st.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[st.target.id] = " ".join(nxt.value.value.split())
    return out


def literal_choices(tp) -> tuple:
    """The allowed values of a ``Literal[...]`` type (also inside ``Optional``), else ()."""
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if typing.get_origin(arg) is typing.Literal:
                return typing.get_args(arg)
    return ()


def flat_parameters(config: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every leaf of a (nested) config as (dotted name, value, description), in declaration order."""
    out = []
    docs = field_docs(type(config))
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += flat_parameters(value, name + ".")
        else:
            desc = docs.get(f.name, "")
            choices = literal_choices(hints[f.name])
            if choices and "|" not in desc:
                desc = f"{desc} One of: {' | '.join(map(str, choices))}.".strip()
            out.append((name, value, desc))
    return out


def nest(flat: dict[str, Any]) -> dict:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}}."""
    out: dict = {}
    for key, v in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def literal(value: str) -> Any:
    """Command-line override text -> a Python value ("0.02" -> 0.02, "true" -> True, "[1,2]" -> [1, 2])."""
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
