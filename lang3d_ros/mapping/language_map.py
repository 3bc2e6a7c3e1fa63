"""The live, queryable language map: fused points that carry per-level segment labels, the segment table
(one float16 language feature, boxes, colour and support per 3D instance), and the text encoder that reads queries
(optionally the scene autoencoder and language Gaussians trained beside it).

Thread model: the mapping worker writes (``integrate``: fusion, mask association, label votes, statistics and
the periodic merge / drop pass), service threads read (``ground``, ``objects``, ``relevancy_by_level``); one
re-entrant lock orders them, so a query sees the map between two frames, never during one. ``ground`` and
``objects`` read snapshots published after each keyframe (the query index, the labelled objects) and do not wait
while a keyframe holds the lock. Queries rank segments,
never points: their cost grows with the number of segments, not of points. What it cannot do: an object no mask
ever covered is not an instance; the features are those of the masks, so grounding quality follows the
semantics backend.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import threading
import time

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.fusion.pointfusion import FusionReport, PointMap
from lang3d_ros.gaussians.config import resolve_field
from lang3d_ros.gaussians.instances import gather_segment_relevancy, render_relevancy, segments_carried
from lang3d_ros.grounding.extract import classify_segments, text_embeddings
from lang3d_ros.grounding.ground import choose_level
from lang3d_ros.grounding.objects import LEVELS, SceneObject
from lang3d_ros.instances.mapper import InstanceMapper
from lang3d_ros.llm.frontend import check_query  # the one query validator
from lang3d_ros.mapping.segment_index import SCENE_OBJECT_COLUMNS, SegmentIndex, select_top
from lang3d_ros.mapstore import MapBundle, read_map, write_map
from lang3d_ros.semantics.types import KeyframeSemantics

log = logging.getLogger(__name__)


class LanguageMap:
    def __init__(self, config, text_encoder, device: str = "auto"):
        """config: lang3d_ros.config.Lang3DConfig; text_encoder: has encode_text(list[str]) -> (N, D) unit tensor
        and feature_dim."""
        from lang3d_ros.semantics.backends import canonical_text_features

        self.config = config
        self.text_encoder = text_encoder
        self.feature_dim = int(text_encoder.feature_dim)
        self.points = PointMap(config.fusion, device=device)
        self.instances = InstanceMapper(config.instances, self.feature_dim)
        canonical = canonical_text_features(text_encoder, config.semantics)
        self.canonical = np.ascontiguousarray(canonical.float().cpu().numpy())  # (C, D) unit rows
        self.lock = threading.RLock()
        self.version = 0
        self.source = "live"
        self.trainer = None  # the online GaussianTrainer, when language Gaussians are trained beside mapping
        self._file_gaussians = None  # GaussianModel with instance codes from a loaded map file, or None
        self._trained_gaussians: tuple[tuple, object] | None = None  # (trainer status key, snapshot) once done
        self.autoencoder = None
        self._objects_cache: tuple[tuple, tuple, list[SceneObject]] | None = None
        self._objects_rows: _LabelledRows | None = None  # per-id labelled objects, reused while a row is unchanged
        self._snapshot: SegmentIndex | None = None  # what queries rank; replaced (never modified) per table change
        self._text_cache: dict[str, np.ndarray] = {}
        self._phrase_cache: dict[tuple, np.ndarray] = {}

    # ---------------------------------------------------------------- writing
    def integrate(self, frame: Frame, semantics: KeyframeSemantics | None = None) -> FusionReport:
        """Fuse one frame; with ``semantics`` (a keyframe) also associate its masks with the segments, vote
        the point labels and refresh the segment statistics (every few keyframes: merge and drop)."""
        if semantics is not None:
            self._check_semantics(frame, semantics)
        with self.lock:
            if semantics is None:
                report = self.points.integrate(frame)
            else:
                report = self.points.integrate(frame, want_pixel_slots=True)
                if report.accepted:
                    self.instances.observe(self.points, frame, semantics, report.pixel_slot, report.pixel_alpha)
            if report.accepted:
                self.version += 1
                if semantics is not None:
                    self._snapshot = self._build_snapshot()
                    self._refresh_objects()
            return report

    def _refresh_objects(self) -> None:
        """After a keyframe (under the lock): bring a cached objects() list up to date (incremental: only the
        changed rows), so that queries during the next keyframe answer from this one's objects."""
        cached = self._objects_cache
        if cached is None:
            return
        try:
            self.objects(vocabulary=cached[1] or None)
        except ValueError as exc:
            log.warning("objects() after a keyframe failed: %s", exc)

    def _check_semantics(self, frame: Frame, semantics: KeyframeSemantics) -> None:
        h, w = frame.depth_m.shape[:2]
        for masks in semantics.levels:
            masks.validate(h, w)
            if masks.num_masks and masks.features.shape[1] != self.feature_dim:
                raise ValueError(
                    f"mask features have dim {masks.features.shape[1]}, the map's text encoder {self.feature_dim}"
                )
            if masks.scores.shape != (masks.num_masks,) or not np.all(np.isfinite(masks.features)):
                raise ValueError("mask scores must be (M,) and features finite")

    def maintain(self) -> None:
        """Run the merge / drop pass now (the mapping worker runs it every few keyframes by itself)."""
        with self.lock:
            self.instances.maintain(self.points)
            self.version += 1
            self._snapshot = self._build_snapshot()

    def _state_key(self) -> tuple[int]:
        """Changes whenever the segment table changes (the snapshot and objects() read only the table)."""
        return (self.instances.version,)

    def _build_snapshot(self) -> SegmentIndex:
        """Under the lock: the query-time index of the current table."""
        return SegmentIndex.build(self._state_key(), self.instances.table, self.canonical, self.instances.answerable())

    def segment_index(self) -> SegmentIndex:
        """The immutable index of answerable segments that Ground ranks (see ``_levels``); readers need no lock."""
        return self._levels()

    def _levels(self) -> SegmentIndex:
        """The index queries rank. Current when the map lock is free (rebuilt here if the table changed since);
        while the mapping worker holds the lock (a keyframe in progress), the one published after the last
        keyframe: a query never waits for a keyframe, and sees the map between two keyframes."""
        snap = self._snapshot
        if snap is not None and not self.lock.acquire(blocking=False):
            return snap
        if snap is None:
            self.lock.acquire()
        try:
            if self._snapshot is None or self._snapshot.key != self._state_key():
                self._snapshot = self._build_snapshot()
            return self._snapshot
        finally:
            self.lock.release()

    # ---------------------------------------------------------------- reading
    def encode_query(self, text: str) -> np.ndarray:
        """(D,) float32 unit text feature, cached."""
        if text not in self._text_cache:
            if len(self._text_cache) > 256:
                self._text_cache.clear()
            q = self.text_encoder.encode_text([text])[0]
            q = q.detach().float().cpu().numpy() if hasattr(q, "detach") else np.asarray(q, np.float32)
            self._text_cache[text] = q / max(float(np.linalg.norm(q)), 1e-8)
        return self._text_cache[text]

    @property
    def num_points(self) -> int:
        return self.points.num_points

    @property
    def num_segments(self) -> int:
        return len(self.instances.table)

    def relevancy_by_level(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (relevancy (3, N) float32, points (N, 3) float32, colours (N, 3) in [0, 1]), one consistent snapshot:
        each point scores its segment's relevancy at that level (a gather through the point labels); points
        without a segment at a level score 0."""
        q = self.encode_query(check_query(text))
        with self.lock:
            index = self._levels()
            xyz = self.points.points_xyz.cpu().numpy()
            colors = self.points.colors.cpu().numpy()
            labels = [_numpy(self.points.labels(lvl)) for lvl in range(len(LEVELS))]
            next_id = self.instances.table.next_id
        out = np.zeros((len(LEVELS), len(xyz)), np.float32)
        rel_all = index.relevancy(q)
        for lvl in range(len(LEVELS)):
            # lut[id + 1] = relevancy; lut[0] (label -1) and lut[-1] (clipped ids outside the table) stay 0
            lut = np.zeros(next_id + 2, np.float32)
            lut[index.level_ids(lvl).astype(np.int64) + 1] = rel_all[index.level_slice(lvl)]
            np.take(lut, labels[lvl].astype(np.int64) + 1, mode="clip", out=out[lvl])
        return out, xyz, colors

    def ground(self, text: str, max_results: int = 0, min_score: float = 0.0, level: str = "") -> list[SceneObject]:
        """Text -> instances, best first: segments ranked by LERF relevancy of their feature, on LangSplat's best
        level (the level holding the most relevant segment; ties go to the coarser level) unless ``level`` names
        one. Kept: relevancy >=
        max(absolute_threshold, relative_threshold * best, min_score), at most max_results (config top_k)."""
        text = check_query(text)
        choose_level([0.0] * len(LEVELS), level)  # ValueError for an unknown level, before any work
        if self.num_points == 0:
            raise ValueError("the map is empty: no frame has been fused yet")
        q = self.encode_query(text)
        index = self._levels()  # an immutable snapshot: ranking it needs no lock
        rel_all = index.relevancy(q)
        lvl = choose_level(index.best_by_level(rel_all), level)
        sl = index.level_slice(lvl)
        rel = rel_all[sl]
        gaussians = self.answering_gaussians()
        if gaussians is not None:  # the Gaussians answer: segments they do not carry cannot be found
            rel = np.where(segments_carried(gaussians, lvl, index.level_ids(lvl)), rel, 0.0).astype(rel.dtype)
        keep = select_top(rel, index.n_points(lvl), self.config.grounding, max_results, min_score)
        return [index.scene_object(sl.start + int(k), score=float(rel[k]), query=text) for k in keep]

    def answering_gaussians(self):
        """The language Gaussians that answer queries under ``grounding.field`` (a GaussianModel carrying instance
        codes), or None when the points answer. Live: the trainer's model once training is done (snapshot cached
        until the trainer changes); served: the Gaussians of the loaded map file. ValueError when the field is
        "gaussians" and none are ready."""
        model = None
        if self.trainer is not None:
            st = self.trainer.status()
            if st.get("state") == "done" and int(st.get("coded_gaussians", 0)) > 0:
                key = (st.get("iterations"), st.get("num_gaussians"), st.get("coded_gaussians"))
                if self._trained_gaussians is None or self._trained_gaussians[0] != key:
                    self._trained_gaussians = (key, self.trainer.snapshot())
                model = self._trained_gaussians[1]
        elif self._file_gaussians is not None:
            model = self._file_gaussians
        return model if resolve_field(self.config.grounding.field, model is not None) == "gaussians" else None

    def render_relevancy(self, text: str, T_world_cam: np.ndarray, intrinsics, level: str = "") -> np.ndarray:
        """(H, W) float32 relevancy in [0, 1] of ``text`` seen from a camera (T_world_cam (4, 4): optical frame in
        the map frame; ``intrinsics``: geometry.Intrinsics), rendered from the language Gaussians through their
        instance codes on the best level (or ``level``): "where in this image is the mug". ValueError when no
        trained Gaussians answer (``grounding.field`` points, or training not done)."""
        text = check_query(text)
        choose_level([0.0] * len(LEVELS), level)
        model = self.answering_gaussians()
        if model is None:
            raise ValueError("no trained language Gaussians answer (grounding.field points, or training not done)")
        q = self.encode_query(text)
        index = self._levels()
        rel_all = index.relevancy(q)
        lvl = choose_level(index.best_by_level(rel_all), level)
        per_gaussian = gather_segment_relevancy(model.codes, index.level_ids(lvl), rel_all[index.level_slice(lvl)])[lvl]
        return render_relevancy(model, per_gaussian, T_world_cam, intrinsics, self.config.gaussians)

    def _scene_object(self, row: int, score: float = 1.0, query: str = "", label: str = "") -> SceneObject:
        t = self.instances.table
        return SceneObject(
            instance_id=int(t.ids[row]),
            label=label or query,
            box=t.box(row),
            aabb=t.aabb(row),
            score=score,
            query=query,
            level=LEVELS[int(t.level[row])],
            n_points=int(t.n_points[row]),
            color_rgb=t.color_rgb[row].astype(np.float64),
            feature=t.unit_features(np.array([row]))[0],
            support_id=int(t.support_id[row]),
            n_observations=int(t.n_observations[row]),
            first_seen_ns=int(t.first_seen_ns[row]),
            last_seen_ns=int(t.last_seen_ns[row]),
        )

    def _phrase_features(self, phrases: tuple[str, ...]) -> np.ndarray:
        if phrases not in self._phrase_cache:
            self._phrase_cache[phrases] = text_embeddings(self.text_encoder, list(phrases))
        return self._phrase_cache[phrases]

    def objects(self, vocabulary: tuple[str, ...] | None = None) -> list[SceneObject]:
        """The "whole"-level instances as labelled SceneObjects, largest first; cached until the table changes.

        Label: open-vocabulary classification of the segment feature (grounding/extract.py); structure (floor,
        walls) is left out unless ``extraction.keep_structure``. Segments under ``instances.min_points`` points
        are left out. Incremental: after a table change only the rows whose content changed (feature, boxes,
        counts, colour, support, stamps) are classified and built again; the others keep their objects. While
        the mapping worker holds the map lock (a keyframe in progress), the last build is returned, not waited
        for (each keyframe brings a cached list up to date before it releases the lock)."""
        cfg = self.config.extraction
        if vocabulary:
            cfg = dataclasses.replace(cfg, vocabulary=list(vocabulary))
        key = tuple(cfg.vocabulary)
        cached = self._objects_cache
        if cached is not None and cached[1] == key:
            if cached[0] == self._state_key():
                return cached[2]
            if not self.lock.acquire(blocking=False):  # a keyframe in progress: the last build, not a wait
                return cached[2]
        else:
            self.lock.acquire()
        try:
            version = self._state_key()
            t = self.instances.table
            answerable = self.instances.answerable()
            rows = np.flatnonzero((t.level == LEVELS.index("whole")) & answerable)
            rows = rows[np.argsort(-t.n_points[rows], kind="stable")]
            sig = _row_signatures(t, rows)
            prev = self._objects_rows
            reuse = prev.unchanged(t.ids[rows], sig, cfg) if prev is not None else np.zeros(len(rows), bool)
            fresh = self._label_rows(rows[~reuse], cfg)
            built = iter(fresh)
            by_row = [prev.objects[int(i)] if r else next(built) for i, r in zip(t.ids[rows].tolist(), reuse.tolist())]
            self._objects_rows = _LabelledRows(t.ids[rows].copy(), sig, copy.deepcopy(cfg), by_row)
            objs = [o for o in by_row if o is not None]
            self._objects_cache = (version, key, objs)
            return objs
        finally:
            self.lock.release()

    def _label_rows(self, rows: np.ndarray, cfg) -> list[SceneObject | None]:
        """rows (K,) of the table -> per row its labelled SceneObject, or None for structure left out."""
        if len(rows) == 0:
            return []
        t = self.instances.table
        text = self._phrase_features(tuple(cfg.vocabulary) + tuple(cfg.structure_labels))
        lab = classify_segments(t.unit_features(rows), t.obb_size[rows].astype(np.float64), text, cfg)
        out: list[SceneObject | None] = []
        for i, row in enumerate(rows.tolist()):
            if lab.structure[i] and not cfg.keep_structure:
                out.append(None)
                continue
            v = int(lab.label_index[i])
            name = cfg.vocabulary[v]
            if lab.structure[i]:
                p = int(lab.structure_phrase[i])
                name = f"structure:{cfg.structure_labels[p] if p >= 0 else name}"
            o = self._scene_object(row, score=float(lab.label_prob[i, v]), label=name)
            o.label_scores = {n: float(x) for n, x in zip(cfg.vocabulary, lab.label_prob[i])}
            out.append(o)
        return out

    def memory_mb(self) -> float:
        """Points (geometry, colour, labels and votes, index) plus the segment table, MiB."""
        with self.lock:
            return (self.points.num_points * self.points.bytes_per_point + self.instances.nbytes) / 2**20

    # ---------------------------------------------------------------- files
    def encoder_metadata(self) -> dict:
        """Which text encoder the map's features belong to (a server needs the same one)."""
        sem = self.config.semantics
        meta = {
            "text_encoder": type(self.text_encoder).__name__,
            "feature_dim": self.feature_dim,
            "semantics_backend": sem.backend,
        }
        if sem.backend == "ground_truth":
            meta["gt_text_encoder"] = sem.gt_text_encoder
        else:
            meta["clip_model"] = f"{sem.clip.backend}:{sem.clip.model_name}:{sem.clip.pretrained}"
        return meta

    def to_bundle(self) -> MapBundle:
        with self.lock:
            state = self.points.state_dict()
            bundle = MapBundle(arrays={f"points.{k}": np.asarray(v) for k, v in state.items()})
            bundle.arrays.update({f"instances.{k}": v for k, v in self.instances.to_arrays().items()})
            bundle.metadata = {
                "frame_id": self.config.frames.map_frame,
                "levels": list(LEVELS),
                "version": self.version,
                "saved_unix_s": time.time(),
                "num_segments": len(self.instances.table),
                **self.encoder_metadata(),
            }
            if self.autoencoder is not None:
                import io

                buf = io.BytesIO()
                torch.save(self.autoencoder.state_dict(), buf)
                bundle.blobs["autoencoder.pt"] = buf.getvalue()
        if self.trainer is not None and self.trainer.status().get("num_gaussians", 0) > 0:
            bundle.blobs["gaussians.ply"] = self._gaussians_ply_bytes()
        return bundle

    def _gaussians_ply_bytes(self) -> bytes:
        """The trainer's current model as a standard 3DGS PLY (+ language latents), as bytes."""
        import tempfile
        from pathlib import Path

        from lang3d_ros.gaussians.ply import save_gaussians

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gaussians.ply"
            ae = self.autoencoder.model.state_dict() if self.autoencoder is not None else None  # decoder weights
            save_gaussians(
                path, self.trainer.snapshot(), metadata={"frame_id": self.config.frames.map_frame}, autoencoder_state=ae
            )
            return path.read_bytes()

    def save(self, path) -> int:
        return write_map(path, self.to_bundle())

    def load(self, path) -> None:
        """Replace this map's content by a map file; on any error (ValueError) the current content is unchanged."""
        bundle = read_map(path)
        meta = bundle.metadata
        if int(meta.get("feature_dim", -1)) != self.feature_dim:
            raise ValueError(
                f"map file features have dim {meta.get('feature_dim')}, this server's text encoder has "
                f"{self.feature_dim}: configure the encoder the map was built with "
                f"({ {k: meta.get(k) for k in ('text_encoder', 'gt_text_encoder', 'clip_model')} })"
            )
        state = {k[len("points.") :]: v for k, v in bundle.arrays.items() if k.startswith("points.")}
        inst = {k[len("instances.") :]: v for k, v in bundle.arrays.items() if k.startswith("instances.")}
        fresh = PointMap(self.config.fusion, device=self.points.device)
        instances = InstanceMapper(self.config.instances, self.feature_dim)
        try:
            fresh.load_state_dict(state)
            instances.load_arrays(inst)
            for lvl in range(len(LEVELS)):
                lab = _numpy(fresh.labels(lvl))
                if lab.size and int(lab.max()) >= instances.table.next_id:
                    raise ValueError(f"point labels of level {LEVELS[lvl]} refer to segments the table never had")
            instances.refresh(fresh)
            gaussians = _gaussians_from_blob(bundle.blobs.get("gaussians.ply"), self.points.device)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: map is invalid ({exc})") from exc
        with self.lock:
            self.points = fresh
            self.instances = instances
            self.version += 1
            self.source = f"file:{path}"
            self._file_gaussians = gaussians
            self._objects_cache = None
            self._objects_rows = None
            self._snapshot = None
        log.info(
            "loaded %s: %d points, %d segments (%s)",
            path,
            fresh.num_points,
            len(instances.table),
            json.dumps({k: meta.get(k) for k in ("frame_id", "feature_dim", "text_encoder")}),
        )


def _gaussians_from_blob(blob: bytes | None, device):
    """The language Gaussians of a map file's ``gaussians.ply`` blob when they carry instance codes, else None."""
    if blob is None:
        return None
    import tempfile
    from pathlib import Path

    from lang3d_ros.gaussians.ply import load_gaussians

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gaussians.ply").write_bytes(blob)
        model = load_gaussians(Path(tmp) / "gaussians.ply", device=device).model
    codes = getattr(model, "codes", None)
    return model if codes is not None and bool((codes >= 0).any()) else None


# table columns a labelled object depends on: a row whose bytes in all of them are unchanged keeps its object
_OBJECT_COLUMNS = (*SCENE_OBJECT_COLUMNS, "feature")


def _row_signatures(table, rows: np.ndarray) -> np.ndarray:
    """(K, B) uint8: the raw bytes of each row in every column a labelled object reads."""
    parts = []
    for c in _OBJECT_COLUMNS:
        col = np.ascontiguousarray(getattr(table, c)[rows])
        row_bytes = col.dtype.itemsize * int(np.prod(col.shape[1:], dtype=np.int64))
        parts.append(col.view(np.uint8).reshape(len(rows), row_bytes))  # (0, B) when no row: same width
    return np.concatenate(parts, axis=1)


@dataclasses.dataclass
class _LabelledRows:
    """The last objects() build: ids (K,) int32, their row signatures (K, B) uint8, the extraction config it used,
    and per row its object (None: structure left out)."""

    ids: np.ndarray
    signatures: np.ndarray
    config: object
    objects_by_row: list

    def __post_init__(self) -> None:
        self.objects = dict(zip(self.ids.tolist(), self.objects_by_row))
        self._order = np.argsort(self.ids, kind="stable")

    def unchanged(self, ids: np.ndarray, signatures: np.ndarray, config) -> np.ndarray:
        """(K,) bool: the rows with these ids and signatures that this build holds unchanged."""
        if config != self.config or len(self.ids) == 0 or signatures.shape[1] != self.signatures.shape[1]:
            return np.zeros(len(ids), bool)
        sorted_ids = self.ids[self._order]
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        found = sorted_ids[pos] == ids
        prev = self.signatures[self._order[pos]]
        return found & np.all(prev == signatures, axis=1)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
