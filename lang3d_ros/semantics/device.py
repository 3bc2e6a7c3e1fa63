"""Model-file errors of the semantics models (the device rule lives in lang3d_ros.device)."""

from __future__ import annotations


class MissingModelError(FileNotFoundError):
    """Model files are absent; the message names what to download and which config key takes its path."""
