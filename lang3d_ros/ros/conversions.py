"""ROS 2 messages <-> numpy and the library's types.

Images go through lang3d_ros.datasets.image_codec (shared with the bag reader), so the node and a bag replay decode
bytes identically. Every function raises ValueError naming the problem on malformed input.
"""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, TransformStamped, Vector3
from nav_msgs.msg import OccupancyGrid, Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from lang3d_ros.datasets import image_codec
from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import matrix_from_pose, pose_from_matrix, yaw_quaternion

DISTORTION_TOLERANCE = 1e-6


# ------------------------------------------------------------------------------------------------ time
def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def make_header(frame_id: str, stamp_ns: int) -> Header:
    return Header(frame_id=frame_id, stamp=ns_to_stamp(stamp_ns))


# ---------------------------------------------------------------------------------------------- images
def image_to_numpy(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> array in the message's encoding ((H,W) or (H,W,C)), native byte order."""
    return image_codec.decode_image(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None, is_bigendian: bool = False) -> Image:
    h, w, step, data = image_codec.encode_image(array, encoding, is_bigendian)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(is_bigendian), step=step)
    msg.data = data
    if header is not None:
        msg.header = header
    return msg


def image_to_rgb8(msg: Image) -> np.ndarray:
    """Colour image message -> (H, W, 3) uint8 RGB."""
    return image_codec.to_rgb8(msg.encoding, image_to_numpy(msg))


def image_to_depth_m(msg: Image, depth_scale: float = 0.001) -> np.ndarray:
    """Depth image message (16UC1 mm / 32FC1 m) -> (H, W) float32 metres, 0 where invalid."""
    return image_codec.to_depth_m(msg.encoding, image_to_numpy(msg), depth_scale)


# ----------------------------------------------------------------------------------------- camera info
def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    """CameraInfo -> pinhole intrinsics of the image as published.

    The pipeline back-projects with a pinhole model only, so non-zero distortion coefficients are refused: use the
    rectified stream (image_proc's image_rect / a driver's aligned rectified depth). Binning and ROI are refused too.
    """
    k = np.asarray(msg.k, dtype=np.float64)
    if k.shape != (9,) or not np.all(np.isfinite(k)):
        raise ValueError("CameraInfo.k must hold 9 finite numbers")
    if k[0] == 0 or k[4] == 0:
        raise ValueError("CameraInfo.k has a zero focal length (uncalibrated camera?)")
    d = np.asarray(msg.d, dtype=np.float64)
    if d.size and (not np.all(np.isfinite(d)) or np.max(np.abs(d)) > DISTORTION_TOLERANCE):
        raise ValueError(
            f"CameraInfo has distortion ({msg.distortion_model}, d={np.round(d, 4).tolist()}) that the pipeline cannot "
            "handle: subscribe to the rectified image (e.g. image_proc's image_rect) whose camera_info has zero "
            "distortion"
        )
    if int(msg.binning_x) > 1 or int(msg.binning_y) > 1:
        raise ValueError(
            f"CameraInfo binning {msg.binning_x}x{msg.binning_y} is not supported; publish unbinned images"
        )
    if int(msg.roi.width) or int(msg.roi.height):
        if (int(msg.roi.width), int(msg.roi.height)) != (int(msg.width), int(msg.height)):
            raise ValueError("CameraInfo with a region of interest is not supported; publish the full image")
    if int(msg.width) <= 0 or int(msg.height) <= 0:
        raise ValueError(f"CameraInfo image size {msg.width}x{msg.height} is not positive")
    return Intrinsics(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(msg.width), int(msg.height))


def intrinsics_to_camera_info(K: Intrinsics, header: Header | None = None) -> CameraInfo:
    msg = CameraInfo(width=K.width, height=K.height, distortion_model="plumb_bob")
    msg.k = K.K.reshape(-1).tolist()
    msg.d = [0.0] * 5
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = np.hstack([K.K, np.zeros((3, 1))]).reshape(-1).tolist()
    if header is not None:
        msg.header = header
    return msg


# --------------------------------------------------------------------------------------------- poses
def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4; non-unit quaternions are normalised, non-finite or zero ones rejected."""
    p, q = pose.position, pose.orientation
    return matrix_from_pose([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])


def matrix_to_pose(T: np.ndarray) -> Pose:
    t, q = pose_from_matrix(T)
    return Pose(
        position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def pose_stamped_to_matrix(msg: PoseStamped) -> tuple[np.ndarray, str, int]:
    """-> (T_frame_child 4x4, header.frame_id, stamp_ns)."""
    return pose_to_matrix(msg.pose), msg.header.frame_id, stamp_to_ns(msg.header.stamp)


def odometry_to_matrix(msg: Odometry) -> tuple[np.ndarray, str, str, int]:
    """-> (T_frame_child 4x4, header.frame_id, child_frame_id, stamp_ns)."""
    return pose_to_matrix(msg.pose.pose), msg.header.frame_id, msg.child_frame_id, stamp_to_ns(msg.header.stamp)


def transform_stamped_to_matrix(msg: TransformStamped) -> tuple[np.ndarray, str, str, int]:
    """-> (T_parent_child 4x4, header.frame_id (parent), child_frame_id, stamp_ns)."""
    t, q = msg.transform.translation, msg.transform.rotation
    T = matrix_from_pose([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])
    return T, msg.header.frame_id, msg.child_frame_id, stamp_to_ns(msg.header.stamp)


def matrix_to_pose_stamped(T: np.ndarray, frame_id: str, stamp_ns: int) -> PoseStamped:
    return PoseStamped(header=make_header(frame_id, stamp_ns), pose=matrix_to_pose(T))


def matrix_to_transform_stamped(T: np.ndarray, parent: str, child: str, stamp_ns: int) -> TransformStamped:
    t, q = pose_from_matrix(T)
    msg = TransformStamped(header=make_header(parent, stamp_ns), child_frame_id=child)
    msg.transform.translation = Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2]))
    msg.transform.rotation = Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    return msg


def planar_pose_stamped(
    x: float, y: float, yaw_rad: float, frame_id: str, stamp_ns: int, z: float = 0.0
) -> PoseStamped:
    q = yaw_quaternion(yaw_rad)
    return PoseStamped(
        header=make_header(frame_id, stamp_ns),
        pose=Pose(
            position=Point(x=float(x), y=float(y), z=float(z)),
            orientation=Quaternion(x=0.0, y=0.0, z=float(q[2]), w=float(q[3])),
        ),
    )


# ------------------------------------------------------------------------------------- point clouds
_NP_TO_FIELD = {
    np.dtype(np.float32): PointField.FLOAT32,
    np.dtype(np.float64): PointField.FLOAT64,
    np.dtype(np.uint32): PointField.UINT32,
    np.dtype(np.int32): PointField.INT32,
    np.dtype(np.uint8): PointField.UINT8,
    np.dtype(np.uint16): PointField.UINT16,
}


def points_to_pointcloud2(
    points_xyz: np.ndarray, header: Header, rgb: np.ndarray | None = None, fields: dict[str, np.ndarray] | None = None
) -> PointCloud2:
    """(N,3) points (+ (N,3) colours in [0,1] or uint8, + named (N,) scalar fields) -> an unorganised PointCloud2.

    Colour is packed into a float32 field ``rgb`` (0x00RRGGBB), the layout RViz and PCL read.
    """
    xyz = np.asarray(points_xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points must be (N,3), got {xyz.shape}")
    n = xyz.shape[0]
    cols: list[tuple[str, np.ndarray]] = [("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2])]
    cols = [(name, np.asarray(c, dtype=np.float32)) for name, c in cols]
    if rgb is not None:
        c = np.asarray(rgb)
        if c.shape != (n, 3):
            raise ValueError(f"rgb must be (N,3) like the points, got {c.shape}")
        c8 = c.astype(np.uint8) if c.dtype == np.uint8 else np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)
        packed = (c8[:, 0].astype(np.uint32) << 16) | (c8[:, 1].astype(np.uint32) << 8) | c8[:, 2].astype(np.uint32)
        cols.append(("rgb", packed.view(np.float32)))
    for name, values in (fields or {}).items():
        v = np.asarray(values)
        if v.shape != (n,):
            raise ValueError(f"field {name!r} must be (N,)={n}, got {v.shape}")
        if v.dtype not in _NP_TO_FIELD:
            v = v.astype(np.float32)
        cols.append((name, v))
    dtype = np.dtype([(name, c.dtype.newbyteorder("<")) for name, c in cols])
    rec = np.empty(n, dtype=dtype)
    for name, c in cols:
        rec[name] = c
    msg = PointCloud2(
        header=header,
        height=1,
        width=n,
        is_bigendian=False,
        point_step=dtype.itemsize,
        row_step=dtype.itemsize * n,
        is_dense=bool(np.all(np.isfinite(xyz))),
    )
    msg.fields = [
        PointField(name=name, offset=dtype.fields[name][1], datatype=_NP_TO_FIELD[np.dtype(c.dtype)], count=1)
        for name, c in cols
    ]
    msg.data = rec.tobytes()
    return msg


def pointcloud2_to_fields(msg: PointCloud2) -> dict[str, np.ndarray]:
    """PointCloud2 -> {field name: (N,) array}; for tests and tools."""
    inv = {v: k for k, v in _NP_TO_FIELD.items()}
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": [inv[f.datatype].newbyteorder(">" if msg.is_bigendian else "<") for f in msg.fields],
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    rec = np.frombuffer(bytes(msg.data), dtype=dtype, count=msg.width * msg.height)
    return {f.name: rec[f.name].astype(rec[f.name].dtype.newbyteorder("=")) for f in msg.fields}


# ------------------------------------------------------------------------------------ objects, boxes
def _color_msg(rgb, a: float = 1.0) -> ColorRGBA:
    c = np.clip(np.asarray(rgb, dtype=float).reshape(3), 0.0, 1.0)
    return ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=float(a))


def box_center_pose(box: Box3D) -> Pose:
    T = np.eye(4)
    T[:3, :3] = box.R_world_box
    T[:3, 3] = box.center
    return matrix_to_pose(T)


def scene_object_to_msg(obj, header: Header):
    """lang3d_ros.grounding.objects.SceneObject -> lang3d_ros/DetectedObject."""
    from lang3d_ros.msg import DetectedObject

    aabb = obj.aabb if getattr(obj, "aabb", None) is not None else obj.box.aabb()
    msg = DetectedObject(
        header=header,
        instance_id=int(max(obj.instance_id, 0)),
        label=str(obj.label),
        query=str(obj.query),
        score=float(obj.score),
        level=str(obj.level),
        num_points=int(max(obj.n_points, 0)),
        mean_color=_color_msg(obj.color_rgb),
    )
    msg.bbox_center = box_center_pose(aabb)
    msg.bbox_size = Vector3(x=float(aabb.size[0]), y=float(aabb.size[1]), z=float(aabb.size[2]))
    msg.has_oriented_box = not obj.box.is_axis_aligned
    if msg.has_oriented_box:
        msg.obb_center = box_center_pose(obj.box)
        msg.obb_size = Vector3(x=float(obj.box.size[0]), y=float(obj.box.size[1]), z=float(obj.box.size[2]))
    return msg


def detected_object_box(msg) -> Box3D:
    """DetectedObject -> its oriented box when it has one, else its axis-aligned box."""
    pose, size = (msg.obb_center, msg.obb_size) if msg.has_oriented_box else (msg.bbox_center, msg.bbox_size)
    T = pose_to_matrix(pose)
    return Box3D(T[:3, 3], np.array([size.x, size.y, size.z]), T[:3, :3])


def boxes_to_marker_array(
    boxes: list[Box3D],
    header: Header,
    labels: list[str] | None = None,
    colors: list | None = None,
    ns: str = "lang3d",
    lifetime_s: float = 0.0,
    alpha: float = 0.35,
) -> MarkerArray:
    """Boxes -> a MarkerArray for RViz: a DELETEALL, then per box a translucent CUBE, a LINE_LIST outline and a
    TEXT_VIEW_FACING label above it."""
    out = MarkerArray()
    out.markers.append(Marker(header=header, ns=ns, action=Marker.DELETEALL))
    sec = int(lifetime_s)
    for i, box in enumerate(boxes):
        color = colors[i] if colors is not None else (0.1, 0.8, 0.2)
        cube = Marker(header=header, ns=ns, id=3 * i, type=Marker.CUBE, action=Marker.ADD, pose=box_center_pose(box))
        sx, sy, sz = (max(float(s), 1e-3) for s in box.size)
        cube.scale = Vector3(x=sx, y=sy, z=sz)
        cube.color = _color_msg(color, alpha)
        cube.lifetime.sec = sec
        edges = Marker(header=header, ns=ns, id=3 * i + 1, type=Marker.LINE_LIST, action=Marker.ADD)
        edges.pose.orientation.w = 1.0
        edges.scale.x = 0.01
        edges.color = _color_msg(color, 1.0)
        c = box.corners()
        for a, b in ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)):
            edges.points.append(Point(x=float(c[a, 0]), y=float(c[a, 1]), z=float(c[a, 2])))
            edges.points.append(Point(x=float(c[b, 0]), y=float(c[b, 1]), z=float(c[b, 2])))
        edges.lifetime.sec = sec
        out.markers += [cube, edges]
        if labels is not None:
            text = Marker(
                header=header, ns=ns, id=3 * i + 2, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, text=str(labels[i])
            )
            text.pose.position = Point(x=float(box.center[0]), y=float(box.center[1]), z=float(box.max_xyz[2] + 0.1))
            text.pose.orientation.w = 1.0
            text.scale.z = 0.12
            text.color = _color_msg((1.0, 1.0, 1.0), 1.0)
            text.lifetime.sec = sec
            out.markers.append(text)
    return out


# ----------------------------------------------------------------------------------- navigation msgs
def occupancy_grid_to_msg(
    resolution_m: float,
    width: int,
    height: int,
    origin_xy_yaw: tuple[float, float, float],
    data_int8: np.ndarray,
    header: Header,
) -> OccupancyGrid:
    data = np.asarray(data_int8, dtype=np.int8).reshape(-1)
    if data.size != int(width) * int(height):
        raise ValueError(f"grid data has {data.size} cells, expected {width}x{height}")
    msg = OccupancyGrid(header=header)
    msg.info.resolution = float(resolution_m)
    msg.info.width, msg.info.height = int(width), int(height)
    msg.info.map_load_time = header.stamp
    msg.info.origin = planar_pose_stamped(*origin_xy_yaw, frame_id=header.frame_id, stamp_ns=0).pose
    msg.data = data.tolist()
    return msg


def path_to_msg(poses_xy_yaw, header: Header, z: float = 0.0) -> Path:
    msg = Path(header=header)
    stamp_ns = stamp_to_ns(header.stamp)
    for x, y, yaw in poses_xy_yaw:
        msg.poses.append(planar_pose_stamped(x, y, yaw, header.frame_id, stamp_ns, z))
    return msg


def quaternion_yaw(q: Quaternion) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def status_to_msg(status: dict, header: Header):
    """MappingPipeline.status() dict -> lang3d_ros/MapStatus."""
    from lang3d_ros.msg import MapStatus

    def u32(key):
        return int(min(max(int(status.get(key, 0)), 0), 2**32 - 1))

    return MapStatus(
        header=header,
        source=str(status.get("source", "live")),
        frames_received=u32("frames_received"),
        frames_fused=u32("frames_fused"),
        frames_rejected=u32("frames_rejected"),
        frames_dropped=u32("frames_dropped"),
        keyframes=u32("keyframes"),
        frames_pending=u32("frames_pending"),
        messages_rejected=u32("messages_rejected"),
        num_points=int(max(status.get("num_points", 0), 0)),
        num_gaussians=int(max(status.get("num_gaussians", 0), 0)),
        training_state=str(status.get("training_state", "disabled")),
        training_iterations=u32("training_iterations"),
        training_loss=float(status.get("training_loss", float("nan"))),
        training_psnr_db=float(status.get("training_psnr_db", float("nan"))),
        memory_mb=float(status.get("memory_mb", 0.0)),
    )
