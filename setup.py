"""pip install of the library core and the `lang3d` tool (no ROS needed).

The ROS build goes through CMakeLists.txt (colcon, ament_cmake): it generates the msg/srv and installs
this same Python package beside them. See README, "Why this layout".
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements(name: str) -> list[str]:
    lines = (HERE / "requirements" / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


setup(
    name="lang3d_ros",
    version="0.1.0",
    description="Open-vocabulary 3D mapping for ROS 2: fused language maps, language Gaussians, grounding, navigation",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lang3d_ros", "lang3d_ros.*"]),
    package_data={"lang3d_ros": ["py.typed"], "lang3d_ros.llm": ["adapters/*/*"]},
    data_files=[
        (
            "share/lang3d_ros/config",
            [str(p.relative_to(HERE)) for ext in ("*.yaml", "*.xml") for p in sorted((HERE / "config").glob(ext))],
        )
    ],
    install_requires=_requirements("core.txt"),
    extras_require={"test": _requirements("test.txt")},
    entry_points={"console_scripts": ["lang3d = lang3d_ros.cli:main"]},
    zip_safe=False,
)
