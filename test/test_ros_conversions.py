"""Message conversions against real ROS 2 message classes (skipped where rclpy is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed in this environment")
from geometry_msgs.msg import PoseStamped, TransformStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from lang3d_ros.geometry.boxes import Box3D  # noqa: E402
from lang3d_ros.geometry.camera import Intrinsics  # noqa: E402
from lang3d_ros.ros import conversions as cv  # noqa: E402


def test_image_message_roundtrip_all_encodings():
    rng = np.random.default_rng(0)
    for enc, arr in {
        "rgb8": rng.integers(0, 255, (4, 5, 3), dtype=np.uint8),
        "bgra8": rng.integers(0, 255, (4, 5, 4), dtype=np.uint8),
        "mono16": rng.integers(0, 65535, (4, 5), dtype=np.uint16),
        "32FC1": rng.uniform(0, 5, (4, 5)).astype(np.float32),
    }.items():
        for big in (False, True):
            msg = cv.numpy_to_image(arr, enc, is_bigendian=big)
            assert isinstance(msg, Image) and msg.encoding == enc
            np.testing.assert_array_equal(cv.image_to_numpy(msg), arr)


def test_depth_16uc1_is_millimetres_and_padding_is_skipped():
    depth_mm = np.array([[1000, 2500], [0, 65535]], dtype=np.uint16)
    msg = cv.numpy_to_image(depth_mm, "16UC1")
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(2, 4)
    msg.data = np.hstack([rows, np.zeros((2, 4), np.uint8)]).tobytes()
    msg.step = 8
    np.testing.assert_allclose(cv.image_to_depth_m(msg), [[1.0, 2.5], [0.0, 65.535]], rtol=1e-6)


def test_image_conversion_agrees_with_cv_bridge_where_installed():
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge is not installed (it is not on PyPI)")
    bridge = cv_bridge.CvBridge()
    rng = np.random.default_rng(1)
    for enc, arr in {
        "bgr8": rng.integers(0, 255, (3, 4, 3), dtype=np.uint8),
        "16UC1": rng.integers(0, 65535, (3, 4), dtype=np.uint16),
        "32FC1": rng.uniform(0, 5, (3, 4)).astype(np.float32),
    }.items():
        msg = bridge.cv2_to_imgmsg(arr, encoding=enc)
        np.testing.assert_array_equal(cv.image_to_numpy(msg), bridge.imgmsg_to_cv2(msg))


def _camera_info(d=(0.0, 0.0, 0.0, 0.0, 0.0)):
    msg = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    msg.k = [525.0, 0.0, 319.5, 0.0, 524.0, 239.5, 0.0, 0.0, 1.0]
    msg.d = list(d)
    return msg


def test_camera_info_to_intrinsics_and_back():
    K = cv.camera_info_to_intrinsics(_camera_info())
    assert K == Intrinsics(525.0, 524.0, 319.5, 239.5, 640, 480)
    assert cv.camera_info_to_intrinsics(cv.intrinsics_to_camera_info(K)) == K


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda m: setattr(m, "d", [0.1, -0.2, 0.0, 0.0, 0.0]), "distortion"),
        (lambda m: setattr(m, "k", [0.0] * 9), "zero focal"),
        (lambda m: setattr(m, "k", [float("nan")] + [1.0] * 8), "finite"),
        (lambda m: setattr(m, "binning_x", 2), "binning"),
        (lambda m: setattr(m, "width", 0), "not positive"),
    ],
)
def test_camera_info_rejections(mutate, match):
    msg = _camera_info()
    mutate(msg)
    with pytest.raises(ValueError, match=match):
        cv.camera_info_to_intrinsics(msg)


def test_pose_conversions_normalise_and_reject():
    rot = Rotation.from_euler("xyz", [0.3, -0.2, 1.1])
    T = np.eye(4)
    T[:3, :3] = rot.as_matrix()
    T[:3, 3] = [1.0, -2.0, 0.5]
    ps = cv.matrix_to_pose_stamped(T, "map", 1_500_000_123)
    T2, frame, stamp = cv.pose_stamped_to_matrix(ps)
    np.testing.assert_allclose(T2, T, atol=1e-12)
    assert frame == "map" and stamp == 1_500_000_123
    # non-unit quaternion: normalised
    q = ps.pose.orientation
    q.x, q.y, q.z, q.w = 2 * q.x, 2 * q.y, 2 * q.z, 2 * q.w
    np.testing.assert_allclose(cv.pose_stamped_to_matrix(ps)[0], T, atol=1e-12)
    # odometry and transform
    odom = Odometry(child_frame_id="base_link")
    odom.header.frame_id = "odom"
    odom.pose.pose = cv.matrix_to_pose(T)
    To, parent, child, _ = cv.odometry_to_matrix(odom)
    np.testing.assert_allclose(To, T, atol=1e-12)
    assert (parent, child) == ("odom", "base_link")
    ts = cv.matrix_to_transform_stamped(T, "map", "camera", 7)
    Tt, parent, child, stamp = cv.transform_stamped_to_matrix(ts)
    np.testing.assert_allclose(Tt, T, atol=1e-12)
    assert (parent, child, stamp) == ("map", "camera", 7)
    # rejections
    bad = PoseStamped()
    bad.pose.orientation.w = 0.0
    with pytest.raises(ValueError, match="zero length"):
        cv.pose_stamped_to_matrix(bad)
    bad.pose.orientation.w = 1.0
    bad.pose.position.x = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        cv.pose_stamped_to_matrix(bad)
    t = TransformStamped()
    t.transform.rotation.x = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        cv.transform_stamped_to_matrix(t)


def test_pointcloud2_packs_xyz_rgb_and_extra_fields():
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 255, (50, 3), dtype=np.uint8)
    score = rng.uniform(size=50).astype(np.float32)
    msg = cv.points_to_pointcloud2(pts, cv.make_header("map", 5), rgb=rgb, fields={"relevancy": score})
    assert msg.width == 50 and msg.height == 1 and [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "relevancy"]
    back = cv.pointcloud2_to_fields(msg)
    np.testing.assert_array_equal(np.stack([back["x"], back["y"], back["z"]], 1), pts)
    packed = back["rgb"].view(np.uint32)
    np.testing.assert_array_equal(np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], 1), rgb)
    np.testing.assert_array_equal(back["relevancy"], score)
    with pytest.raises(ValueError, match="rgb"):
        cv.points_to_pointcloud2(pts, cv.make_header("map", 0), rgb=rgb[:3])


def test_boxes_to_markers_outline_matches_corners():
    box = Box3D(np.array([1.0, 2.0, 0.5]), np.array([0.4, 0.2, 1.0]), Rotation.from_euler("z", 0.7).as_matrix())
    arr = cv.boxes_to_marker_array([box], cv.make_header("map", 0), labels=["chair"])
    types = [m.type for m in arr.markers]
    assert arr.markers[0].action == Marker.DELETEALL
    assert types[1:] == [Marker.CUBE, Marker.LINE_LIST, Marker.TEXT_VIEW_FACING]
    cube, edges, text = arr.markers[1:]
    np.testing.assert_allclose([cube.pose.position.x, cube.pose.position.y, cube.pose.position.z], box.center)
    assert cv.quaternion_yaw(cube.pose.orientation) == pytest.approx(0.7)
    pts = np.array([[p.x, p.y, p.z] for p in edges.points])
    assert len(pts) == 24
    d = np.linalg.norm(pts[:, None] - box.corners()[None], axis=2).min(1)
    assert d.max() < 1e-9 and text.text == "chair"


def test_path_and_grid_messages():
    hdr = cv.make_header("map", 0)
    path = cv.path_to_msg([(0.0, 0.0, 0.0), (1.0, 0.5, 1.0)], hdr)
    assert len(path.poses) == 2 and cv.quaternion_yaw(path.poses[1].pose.orientation) == pytest.approx(1.0)
    grid = cv.occupancy_grid_to_msg(0.05, 3, 2, (1.0, 2.0, 0.0), np.array([0, 100, -1, 0, 0, 0]), hdr)
    assert grid.info.width == 3 and list(grid.data) == [0, 100, -1, 0, 0, 0]
    with pytest.raises(ValueError, match="cells"):
        cv.occupancy_grid_to_msg(0.05, 3, 3, (0, 0, 0), np.zeros(6), hdr)
