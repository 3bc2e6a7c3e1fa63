"""Every Lang3DConfig leaf as a declared ROS 2 parameter (with its description), and back.

The dataclass defaults are declared; a ``--params-file`` overrides them; ``config_from_node`` rebuilds the typed
config from the node's parameters, so node and library read the same values.
"""

from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from lang3d_ros.config import Lang3DConfig, flat_parameters, nest
from lang3d_ros.config_base import from_mapping


def declare_config(node: Node, defaults: Lang3DConfig | None = None) -> Lang3DConfig:
    """Declare all parameters on ``node`` and return the typed config they hold (ConfigError if invalid)."""
    defaults = defaults or Lang3DConfig()
    for name, value, desc in flat_parameters(defaults):
        dynamic = value is None or isinstance(value, (list, tuple))  # None and lists have no fixed ROS type
        node.declare_parameter(
            name,
            list(value) if isinstance(value, (list, tuple)) else value,
            ParameterDescriptor(description=desc, dynamic_typing=dynamic),
        )
    return config_from_node(node, defaults)


def config_from_node(node: Node, defaults: Lang3DConfig | None = None) -> Lang3DConfig:
    defaults = defaults or Lang3DConfig()
    flat = {}
    for name, value, _ in flat_parameters(defaults):
        v = node.get_parameter(name).value
        if isinstance(value, list):
            v = list(v) if v is not None else []
        elif isinstance(value, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        flat[name] = v
    return from_mapping(Lang3DConfig, nest(flat))
