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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lang3d_ros.config_base import ConfigError, from_mapping, to_mapping
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.grounding.config import ExtractionConfig, GroundingConfig
from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.mapping.config import MappingConfig
from lang3d_ros.navigation.config import NavigationConfig
from lang3d_ros.semantics.config import SemanticsConfig


@dataclass
class FramesConfig:
    """Frame ids (REP 105)."""

    map_frame: str = "map"  # frame of the map, of every answer and of published clouds/markers
    robot_frame: str = "base_link"  # the robot body, for navigation start poses from TF / odometry
    camera_frame: str = ""  # optical frame of the camera; "" = take it from the image headers


@dataclass
class Lang3DConfig:
    frames: FramesConfig = field(default_factory=FramesConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    semantics: SemanticsConfig = field(default_factory=SemanticsConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    gaussians: GaussianConfig = field(default_factory=GaussianConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    navigation: NavigationConfig = field(default_factory=NavigationConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)


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


def dump_config(config: Lang3DConfig) -> str:
    return yaml.safe_dump({"/**": {"ros__parameters": to_mapping(config)}}, sort_keys=False)


# ------------------------------------------------------------------------------- flat parameter view
def _field_comments(cls: type) -> dict[str, str]:
    """``name: type = default  # comment`` -> {name: comment}, read from the class source (for descriptions)."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for line in lines:
        code, _, comment = line.partition("#")
        name = code.split(":")[0].strip()
        if name in names and comment.strip():
            out[name] = comment.strip()
    return out


def flat_parameters(config: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every leaf of a (nested) config as (dotted name, value, description), in declaration order."""
    out = []
    comments = _field_comments(type(config))
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += flat_parameters(value, name + ".")
        else:
            desc = comments.get(f.name) or f"{type(config).__name__}.{f.name} ({getattr(hints[f.name], '__name__', hints[f.name])})"
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
