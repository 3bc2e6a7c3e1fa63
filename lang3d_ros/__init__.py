"""lang3d_ros: an online open-vocabulary 3D map a robot can talk about.

The library core (every subpackage but ``lang3d_ros.ros``) imports no ROS module. The ROS build
generates ``lang3d_ros.msg`` / ``lang3d_ros.srv`` into the colcon install space; ``extend_path``
below lets those generated modules and this source tree (e.g. an editable pip install) form one
package, whichever comes first on ``sys.path``.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)  # noqa: F821 - merges generated msg/srv with the sources

__version__ = "0.1.0"
