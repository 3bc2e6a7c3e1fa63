"""Online fusion of RGB-D frames into a 3D point map (gradSLAM PointFusion) with per-point segment label votes."""

from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.pointfusion import FusionReport, PointMap
from lang3d_ros.fusion.vertex import confidence_map, normal_map, vertex_map

__all__ = ["FusionConfig", "FusionReport", "PointMap", "confidence_map", "normal_map", "vertex_map"]
