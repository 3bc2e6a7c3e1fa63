"""What the services answer, without ROS: grounding, navigation goals and questions on a LanguageMap.

Grounding takes one of two paths and says which: a plain noun phrase ("red mug") goes through the language
field (relevancy -> clusters -> boxes, "relevancy"); a referring expression with a relation or superlative
("the mug on the table nearest the door") goes through the 3D-LLM reasoner over the map's objects, where the
model only structures the text and the geometry is computed in code ("llm" or "parser").
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from lang3d_ros.grounding.objects import SceneObject
from lang3d_ros.mapping.language_map import LanguageMap, check_query
from lang3d_ros.navigation.goal import NavigationResult, plan_to_object
from lang3d_ros.navigation.grid import OccupancyGrid, build_occupancy_grid

log = logging.getLogger(__name__)

_NAV_PREFIX = re.compile(
    r"^\s*(please\s+)?(can you\s+|could you\s+)?(take me|bring me|drive|move|navigate|go|head|get me|guide me)"
    r"(\s+(over|back))?\s+(to|towards|toward|near|next to|up to)\s+", re.IGNORECASE)


_ARTICLE = re.compile(r"^(the|a|an|some|my|this|that)\s+", re.IGNORECASE)


def strip_article(phrase: str) -> str:
    """'the red mug' -> 'red mug' (the noun phrase labels the answer and is what the encoder reads)."""
    out = _ARTICLE.sub("", phrase.strip(), count=1).strip()
    return out or phrase.strip()


def navigation_target_phrase(instruction: str) -> str:
    """'take me to the chair by the window' -> 'the chair by the window' (text unchanged when no verb prefix)."""
    text = check_query(instruction)
    stripped = _NAV_PREFIX.sub("", text, count=1).strip().rstrip(".!?")
    return stripped or text


@dataclass
class GroundResult:
    objects: list[SceneObject]
    answered_by: str  # relevancy | llm | parser
    message: str = ""
    latency_ms: float = 0.0


@dataclass
class NavigateResult:
    success: bool
    message: str
    target: SceneObject | None = None
    navigation: NavigationResult | None = None
    grid: OccupancyGrid | None = None
    answered_by: str = ""
    latency_ms: float = 0.0
    extra: dict = field(default_factory=dict)


class QueryEngine:
    def __init__(self, config, language_map: LanguageMap, reasoner=None):
        """reasoner: lang3d_ros.llm.Reasoner (None: built parser-only on first use)."""
        self.config = config
        self.map = language_map
        self._reasoner = reasoner
        self._grid: tuple[int, OccupancyGrid] | None = None
        self._grid_lock = threading.Lock()

    @property
    def reasoner(self):
        if self._reasoner is None:
            from lang3d_ros.llm import Reasoner

            self._reasoner = Reasoner(self.config.llm, backend=None, encoder=self.map.text_encoder)
        return self._reasoner

    def set_reasoner(self, reasoner) -> None:
        self._reasoner = reasoner

    @staticmethod
    def is_relational(text: str) -> bool:
        """True when the deterministic parser finds a relation, a superlative, anchors, or a colour / size
        attribute in the phrase: those are resolved on the map's objects (colour from the fused points), where a
        label embedding alone cannot tell a red mug from a blue one."""
        from lang3d_ros.llm import parse

        req = parse(text)
        t = getattr(req, "target", None) if req is not None else None
        return bool(t is not None and (t.relation or t.superlative or t.anchors or t.color or t.size))

    # -------------------------------------------------------------------------------- grounding
    def ground(self, query: str, max_results: int = 0, min_score: float = 0.0, level: str = "",
               robot_pose=(0.0, 0.0, 0.0)) -> GroundResult:
        t0 = time.perf_counter()
        text = check_query(query)
        if self.map.num_points == 0:
            raise ValueError("the map is empty: no frame has been fused yet")
        if not level and self.is_relational(text):
            ans = self.reasoner.ground(text, self.map.objects(), robot_pose)
            objs = [o for o in ans.objects if o.score >= min_score][: max_results or self.config.grounding.top_k]
            for o in objs:
                o.query = text
            return GroundResult(objs, ans.path, ans.message, (time.perf_counter() - t0) * 1e3)
        objs = self.map.ground(strip_article(text), max_results=max_results, min_score=min_score, level=level)
        msg = f"{len(objs)} object(s) for {text!r}" if objs else f"nothing in the map matches {text!r}"
        return GroundResult(objs, "relevancy", msg, (time.perf_counter() - t0) * 1e3)

    # ------------------------------------------------------------------------------- navigation
    def occupancy_grid(self) -> OccupancyGrid:
        with self._grid_lock:
            if self._grid is not None and self._grid[0] == self.map.version:
                return self._grid[1]
            with self.map.lock:
                version = self.map.version
                xyz = self.map.points.points_xyz.cpu().numpy()
            grid = dataclasses.replace(build_occupancy_grid(xyz, self.config.navigation), frame_id=self.config.frames.map_frame)
            self._grid = (version, grid)
            return grid

    def navigate(self, instruction: str, standoff_m: float = 0.0, start_xy_yaw=(0.0, 0.0, 0.0)) -> NavigateResult:
        t0 = time.perf_counter()
        phrase = navigation_target_phrase(instruction)
        found = self.ground(phrase, max_results=1, robot_pose=start_xy_yaw)
        if not found.objects:
            return NavigateResult(False, f"no target: {found.message or 'nothing matches ' + repr(phrase)}",
                                  answered_by=found.answered_by, latency_ms=(time.perf_counter() - t0) * 1e3)
        target = found.objects[0]
        grid = self.occupancy_grid()
        standoff = standoff_m if standoff_m > 0 else self.config.navigation.standoff_m
        result = plan_to_object(grid, target.box, np.asarray(start_xy_yaw[:2], dtype=float), self.config.navigation, standoff)
        msg = (f"goal {standoff:.2f} m from the {target.label or phrase}, path {result.path_length_m:.2f} m"
               if result.success else f"target found ({target.label or phrase}) but unreachable: {result.reason}")
        return NavigateResult(result.success, msg, target, result, grid, found.answered_by, (time.perf_counter() - t0) * 1e3)

    # -------------------------------------------------------------------------------- questions
    def ask(self, question: str, robot_pose=(0.0, 0.0, 0.0)):
        text = check_query(question)
        if self.map.num_points == 0:
            raise ValueError("the map is empty: no frame has been fused yet")
        return self.reasoner.ask(text, self.map.objects(), robot_pose)
