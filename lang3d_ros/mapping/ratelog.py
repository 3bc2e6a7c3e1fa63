"""One log line per reason per period: sensor faults repeat at frame rate, the log must not."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class ReasonLog:
    """Logs the first occurrence of a reason at once, then at most one line per reason every ``period_s`` with the
    count of occurrences since the previous line. Thread-safe. The reason is the rate-limit key: keep numbers out of
    it (put them in ``detail``)."""

    def __init__(self, logger: logging.Logger, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.period_s = float(period_s)
        self._clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, reason: str, detail: str = "", level: int = logging.WARNING) -> bool:
        """Log ``reason: detail`` unless this reason was logged less than ``period_s`` ago; True when logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self.period_s:
                self._skipped[reason] = self._skipped.get(reason, 0) + 1
                return False
            self._last[reason] = now
            skipped = self._skipped.pop(reason, 0)
        more = f" ({skipped} more since the last report)" if skipped else ""
        self.logger.log(level, "%s%s%s", reason, f": {detail}" if detail else "", more)
        return True
