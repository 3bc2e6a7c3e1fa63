"""What the services answer, without ROS: grounding, navigation goals and questions on a LanguageMap.

One routing path: every request is validated once (``llm.frontend.check_query``) and understood once
(``Reasoner.understand``: front end, parser, label matcher, the model ranking / filling); ``Understanding.route``
then sends a plain noun phrase ("the couch", "find the red mug" is not plain: it has a colour) to the language
field (relevancy -> clusters -> boxes, answered_by "relevancy") and everything else (relations, superlatives,
colours, sizes, questions, tasks) to the reasoner over the map's objects, where the geometry is computed in code
(answered_by "llm" or "parser"). A noun naming nothing in the map raises Lang3DError(NOT_FOUND).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.grounding.objects import LEVELS, SceneObject
from lang3d_ros.llm.frontend import check_query, normalize
from lang3d_ros.llm.understand import AnsweredBy, Route, Understanding
from lang3d_ros.mapping.language_map import LanguageMap
from lang3d_ros.navigation.goal import NavigationResult, object_footprint_xy, plan_to_object
from lang3d_ros.navigation.grid import OccupancyGrid, build_occupancy_grid

log = logging.getLogger(__name__)

_ARTICLES = ("the", "a", "an", "some", "my", "this", "that")


def strip_article(phrase: str) -> str:
    """'the red mug' -> 'red mug' (the noun phrase labels the answer and is what the encoder reads)."""
    words = phrase.strip().split()
    out = " ".join(words[1:]) if len(words) > 1 and words[0].lower() in _ARTICLES else phrase.strip()
    return out or phrase.strip()


def navigation_target_phrase(instruction: str) -> str:
    """'take me to the chair by the window' -> 'the chair by the window' (lead-ins and politeness removed by the
    front end; text otherwise unchanged)."""
    n = normalize(check_query(instruction))
    return n.text or check_query(instruction)


@dataclass(frozen=True)
class _GridSnapshot:
    """The occupancy grid and the map points it was built from: xyz (N,3) float32 and per-level segment labels
    (len(LEVELS), N) int32 (-1 unlabelled), so a target's own points match the grid it is planned on."""

    version: int
    grid: OccupancyGrid
    xyz: np.ndarray
    labels: np.ndarray


@dataclass
class GroundResult:
    objects: list[SceneObject]
    answered_by: AnsweredBy
    message: str = ""
    latency_ms: float = 0.0


@dataclass
class NavigateResult:
    success: bool
    message: str
    target: SceneObject | None = None
    navigation: NavigationResult | None = None
    grid: OccupancyGrid | None = None
    answered_by: AnsweredBy | str = ""
    latency_ms: float = 0.0
    extra: dict = field(default_factory=dict)


class QueryEngine:
    def __init__(self, config, language_map: LanguageMap, reasoner=None):
        """reasoner: lang3d_ros.llm.Reasoner (None: built parser-only on first use)."""
        self.config = config
        self.map = language_map
        self._reasoner = reasoner
        self._grid: _GridSnapshot | None = None
        self._grid_lock = threading.Lock()

    @property
    def reasoner(self):
        if self._reasoner is None:
            from lang3d_ros.llm import Reasoner

            self._reasoner = Reasoner(self.config.llm, backend=None, encoder=self.map.text_encoder)
        return self._reasoner

    def set_reasoner(self, reasoner) -> None:
        self._reasoner = reasoner

    def _understand(self, text: str) -> tuple[list[SceneObject], Understanding]:
        """The map's objects and the one Understanding of ``text`` (already through check_query)."""
        if self.map.num_points == 0:
            raise Lang3DError(ErrorCode.NO_MAP, "the map is empty: no frame has been fused yet")
        objects = self.map.objects()
        return objects, self.reasoner.understand(text, objects)

    # -------------------------------------------------------------------------------- grounding
    def ground(
        self, query: str, max_results: int = 0, min_score: float = 0.0, level: str = "", robot_pose=(0.0, 0.0, 0.0)
    ) -> GroundResult:
        """Objects for a query, best first; the route (relevancy or reasoning) is ``Understanding.route``'s."""
        t0 = time.perf_counter()
        text = check_query(query, self.config.llm.max_query_chars)
        objects, u = self._understand(text)
        return self._ground_understood(text, objects, u, max_results, min_score, level, robot_pose, t0)

    def _ground_understood(
        self,
        text: str,
        objects: list[SceneObject],
        u: Understanding,
        max_results: int,
        min_score: float,
        level: str,
        robot_pose,
        t0: float,
    ) -> GroundResult:
        if u.route(level) == Route.REASONING:
            ans = self.reasoner.ground(text, objects, robot_pose, understood=u)
            objs = [o for o in ans.objects if o.score >= min_score][: max_results or self.config.grounding.top_k]
            for o in objs:
                o.query = text
            return GroundResult(objs, ans.path, ans.message, (time.perf_counter() - t0) * 1e3)
        phrase = u.noun_phrase or text
        objs = self.map.ground(phrase, max_results=max_results, min_score=min_score, level=level)
        msg = f"{len(objs)} object(s) for {phrase!r}" if objs else f"nothing in the map matches {phrase!r}"
        return GroundResult(objs, AnsweredBy.RELEVANCY, msg, (time.perf_counter() - t0) * 1e3)

    # ------------------------------------------------------------------------------- navigation
    def occupancy_grid(self) -> OccupancyGrid:
        """The grid of the map's points, rebuilt when the map changed; while the mapping worker holds the map lock
        (a frame in progress) the last grid, not a wait."""
        return self._grid_snapshot().grid

    def _grid_snapshot(self) -> _GridSnapshot:
        with self._grid_lock:
            if self._grid is not None and self._grid.version == self.map.version:
                return self._grid
            if self._grid is not None and not self.map.lock.acquire(blocking=False):
                return self._grid
            if self._grid is None:
                self.map.lock.acquire()
            try:
                version = self.map.version
                pts = self.map.points
                xyz = pts.points_xyz.cpu().numpy()
                labels = np.stack([pts.labels(lvl).cpu().numpy() for lvl in range(len(LEVELS))])
            finally:
                self.map.lock.release()
            grid = dataclasses.replace(
                build_occupancy_grid(xyz, self.config.navigation), frame_id=self.config.frames.map_frame
            )
            self._grid = _GridSnapshot(version, grid, xyz, labels)
            return self._grid

    def target_footprint_xy(self, target: SceneObject, snapshot: _GridSnapshot | None = None) -> np.ndarray | None:
        """(M,2) xy of the target segment's own points on the floor (``object_footprint_xy``: in its box, in the
        obstacle band) from the grid's snapshot of the map, or None (no segment id / level, too few points)."""
        snap = snapshot or self._grid_snapshot()
        if target.level not in LEVELS or target.instance_id < 0:
            return None
        own = snap.labels[LEVELS.index(target.level)] == target.instance_id
        if not own.any():
            return None
        return object_footprint_xy(snap.xyz[own], target.box, snap.grid.floor_z_m, self.config.navigation)

    def navigate(self, instruction: str, standoff_m: float = 0.0, start_xy_yaw=(0.0, 0.0, 0.0)) -> NavigateResult:
        """A goal pose and a path to the object the instruction names (understood once, like ``ground``); the
        standoff is measured from the object's own points when the map has them, else from its box."""
        t0 = time.perf_counter()
        text = check_query(instruction, self.config.llm.max_query_chars)
        objects, u = self._understand(text)
        found = self._ground_understood(text, objects, u, 1, 0.0, "", start_xy_yaw, t0)
        phrase = u.noun_phrase or text
        if not found.objects:
            return NavigateResult(
                False,
                f"no target: {found.message or 'nothing matches ' + repr(phrase)}",
                answered_by=found.answered_by,
                latency_ms=(time.perf_counter() - t0) * 1e3,
            )
        target = found.objects[0]
        snap = self._grid_snapshot()
        grid = snap.grid
        standoff = standoff_m if standoff_m > 0 else self.config.navigation.standoff_m
        footprint = self.target_footprint_xy(target, snap)
        result = plan_to_object(
            grid,
            target.box,
            np.asarray(start_xy_yaw[:2], dtype=float),
            self.config.navigation,
            standoff,
            footprint_xy=footprint,
        )
        if result.success:  # the achieved standoff; a farther or nearer ring says so
            off_ring = abs(result.standoff_m - standoff) > 0.5 * self.config.navigation.resolution_m
            msg = f"goal {result.standoff_m:.2f} m from the {target.label or phrase}"
            msg += f" (asked {standoff:.2f} m; no reachable goal there)" if off_ring else ""
            msg += f", path {result.path_length_m:.2f} m"
            if result.unexplored_m > 0:  # plan_through_unexplored: no route over observed floor
                msg += f" ({result.unexplored_m:.2f} m of it over unexplored space)"
        else:
            msg = f"target found ({target.label or phrase}) but unreachable: {result.reason}"
        return NavigateResult(
            result.success,
            msg,
            target,
            result,
            grid,
            found.answered_by,
            (time.perf_counter() - t0) * 1e3,
            {"standoff_from": "points" if footprint is not None else "box"},
        )

    # -------------------------------------------------------------------------------- questions
    def ask(self, question: str, robot_pose=(0.0, 0.0, 0.0)):
        """A question or an instruction answered from map facts (understood once)."""
        text = check_query(question, self.config.llm.max_query_chars)
        objects, u = self._understand(text)
        return self.reasoner.ask(text, objects, robot_pose, understood=u)
