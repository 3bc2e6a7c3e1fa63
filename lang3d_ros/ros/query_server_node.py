"""Query server node: Ground, Navigate, Ask, RenderRelevancy, SaveMap, LoadMap and GetMapStatus on a map file
(``ros.load_map``), no mapping; RenderRelevancy needs the camera in the request (a file server has no current camera).
A lifecycle node (see lang3d_ros.ros.lifecycle): configure loads the text encoder and the map file,
activate creates the services and the answer topics (lang3d_ros.ros.services), deactivate removes them.

In the mapper process the same services are attached to the mapper node itself and answer on the live map.
"""

from __future__ import annotations

import os

from lang3d_ros.ros.lifecycle import Lang3DLifecycleNode


class QueryServerNode(Lang3DLifecycleNode):
    live = False

    def __init__(self, node_name: str = "lang3d_query_server", **kwargs):
        super().__init__(node_name, **kwargs)

    def _configure_map(self, cfg) -> None:
        """The text encoder and an empty map, then ``ros.load_map`` when set (ValueError: configure fails)."""
        super()._configure_map(cfg)
        if cfg.ros.load_map:
            self.language_map.load(os.path.expanduser(cfg.ros.load_map))
            self.get_logger().info(f"serving {cfg.ros.load_map}: {self.language_map.num_points} points")
