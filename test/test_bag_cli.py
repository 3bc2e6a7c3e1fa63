"""`lang3d synth` and `lang3d info` end to end on a tiny bag."""

from __future__ import annotations

import json

import numpy as np

from lang3d_ros.cli import main
from lang3d_ros.datasets import open_source
from lang3d_ros.datasets.synthetic import load_ground_truth


def test_synth_then_info(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "synth",
        "--seed",
        "4",
        "--out",
        str(out),
        "--frames",
        "6",
        "--width",
        "80",
        "--height",
        "60",
        "--pose-rate",
        "90",
    ]
    assert main(args + ["--storage", "sqlite3", "--depth-encoding", "32FC1"]) == 0
    gt = load_ground_truth(out / "bag" / "ground_truth.json")
    assert len(gt.objects) == 12 and gt.T_world_cams.shape == (6, 4, 4) and gt.intrinsics.width == 80
    src = open_source(out / "bag")
    assert len(src) == 6
    frames = list(src)
    np.testing.assert_array_equal([f.stamp_ns for f in frames], gt.stamps_ns)
    capsys.readouterr()

    assert main(["info", str(out / "bag")]) == 0
    text = capsys.readouterr().out
    assert (
        "| /camera/color/image_raw | sensor_msgs/msg/Image | 6 |" in text
        and "80x60 rgb8" in text
        and "80x60 32FC1" in text
    )
    assert "fx=65.625" in text and "trajectory (/camera/pose)" in text
    assert main(["info", "--json", str(out / "bag")]) == 0
    info = json.loads(capsys.readouterr().out)
    rates = {t["topic"]: t["rate_hz"] for t in info["topics"]}
    assert abs(rates["/camera/color/image_raw"] - 30.0) < 1.5 and abs(rates["/odom"] - 90.0) < 5.0
    length = info["trajectory"]["/camera/pose"]["length_m"]
    ref = np.linalg.norm(np.diff(gt.T_world_cams[:, :3, 3], axis=0), axis=1).sum()
    assert abs(length - ref) < 0.02 * ref + 1e-3

    # a second run into the same folder is refused, a damaged bag gives a clear error (exit 1)
    assert main(args) == 1
    assert "exists already" in capsys.readouterr().err
    db = out / "bag" / "bag.db3"
    db.write_bytes(db.read_bytes()[:2000])
    assert main(["info", str(out / "bag")]) == 1
    assert "bag" in capsys.readouterr().err
