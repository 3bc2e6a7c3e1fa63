"""Machine-readable outcomes: the error codes every service response carries, and the library's error type.

A planner branches on ``error_code`` (as on Nav2's action results: ``error_code`` + ``error_msg``), never on the
wording of ``message``. The numbers are part of the ROS interface: every ``srv/*.srv`` repeats them as constants
(``uint16 ERROR_NOT_FOUND=3``), and a test checks that the two lists agree.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Why a request did not succeed (0: it did)."""

    NONE = 0
    """Success."""
    BAD_REQUEST = 1
    """The request itself is invalid: empty, over-long or non-text query, unknown level, NaN numbers, bad pose."""
    NO_MAP = 2
    """No map yet: nothing has been fused or loaded."""
    NOT_FOUND = 3
    """The request is valid, but nothing in the map matches it."""
    AMBIGUOUS = 4
    """Several objects match equally well and the request asked for one."""
    UNREACHABLE = 5
    """The target exists, but no collision-free path or standoff pose reaches it."""
    MODEL_UNAVAILABLE = 6
    """A model the request needs (text encoder, 3D-LLM, Gaussians) is not loaded or failed."""
    IO_ERROR = 7
    """A file could not be read or written (map files: not allowed, not found and not a map give this one code)."""
    NOT_ALLOWED = 8
    """The request is valid but refused in the node's current state (e.g. lifecycle inactive, intake paused)."""
    INTERNAL = 99
    """An unexpected failure inside the node; the log has the details."""


class Lang3DError(ValueError):
    """A request or input that cannot be served, with its ``ErrorCode``.

    A ``ValueError`` so that every existing "bad input changes nothing" path catches it; code that only knows
    ``ValueError`` maps to ``ErrorCode.BAD_REQUEST`` (see ``error_code_of``).
    """

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = ErrorCode(code)


def error_code_of(exc: BaseException) -> ErrorCode:
    """The code of an exception raised while serving a request: its own for Lang3DError, BAD_REQUEST for other
    ValueErrors (invalid input), IO_ERROR for OSError, INTERNAL otherwise."""
    if isinstance(exc, Lang3DError):
        return exc.code
    if isinstance(exc, ValueError):
        return ErrorCode.BAD_REQUEST
    if isinstance(exc, OSError):
        return ErrorCode.IO_ERROR
    return ErrorCode.INTERNAL
