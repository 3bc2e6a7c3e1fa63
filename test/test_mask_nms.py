"""The vectorised mask NMS equals a direct O(n^2) loop written from LangSplat's description."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.semantics.mask_nms import mask_nms, pairwise_intersections


def reference_mask_nms(
    masks: np.ndarray, scores: np.ndarray, iou_thr: float, score_thr: float, inner_thr: float
) -> list[int]:
    """Direct loop: per pair counts, LangSplat's matrices, its fallbacks; zero-area masks dropped."""
    n = len(scores)
    order = sorted(range(n), key=lambda k: (-scores[k], k))
    m = [masks[k].astype(bool) for k in order]
    s = [float(scores[k]) for k in order]
    area = [float(x.sum()) for x in m]
    iou = np.zeros((n, n))
    inner = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            inter = float(np.logical_and(m[i], m[j]).sum())
            union = float(np.logical_or(m[i], m[j]).sum())
            iou[i, j] = inter / union if union > 0 else 0.0
            if area[i] == 0 or area[j] == 0:
                continue
            ri, rj = inter / area[i], inter / area[j]
            if ri < 0.5 and rj >= 0.85:
                inner[i, j] = 1 - rj * ri
            if ri >= 0.85 and rj < 0.5:
                inner[j, i] = 1 - rj * ri
    keep = []
    for j in range(n):
        iou_max = max([iou[i, j] for i in range(j)], default=0.0)
        inner_u = max([inner[i, j] for i in range(j)], default=0.0)
        inner_l = max([inner[r, j] for r in range(max(j - 1, 0), n)], default=0.0)  # tril(diagonal=1)
        keep.append(
            [iou_max <= iou_thr, s[j] > score_thr, inner_u <= 1 - inner_thr, inner_l <= 1 - inner_thr, area[j] > 0]
        )
    keep = np.array(keep, dtype=bool)
    for col in (1, 2, 3):  # LangSplat: when a rule drops everything, its 3 best masks stay eligible
        if not keep[:, col].any():
            keep[: min(3, n), col] = True
    return [order[j] for j in range(n) if keep[j].all()]


def random_masks(rng: np.random.Generator, n: int, h: int = 24, w: int = 32) -> np.ndarray:
    """Rectangles and ellipses, with duplicates (jittered) and nested pieces so every rule fires."""
    yy, xx = np.mgrid[:h, :w]
    out = []
    while len(out) < n:
        kind = rng.integers(4)
        if kind == 0 or not out:
            y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
            out.append((yy >= y0) & (yy < y0 + rng.integers(2, h)) & (xx >= x0) & (xx < x0 + rng.integers(2, w)))
        elif kind == 1:
            cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, h / 2), rng.uniform(2, w / 2)
            out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
        elif kind == 2:  # near duplicate of an earlier mask
            base = out[rng.integers(len(out))].copy()
            flip = rng.random((h, w)) < 0.03
            out.append(base ^ flip)
        else:  # small piece nested inside an earlier mask
            base = out[rng.integers(len(out))]
            ys, xs = np.nonzero(base)
            if len(ys) == 0:
                continue
            k = rng.integers(len(ys))
            piece = base & (np.abs(yy - ys[k]) <= 2) & (np.abs(xx - xs[k]) <= 2)
            out.append(piece)
    return np.stack(out)


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_direct_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = random_masks(rng, 40)
    scores = rng.uniform(0.5, 1.0, 40).astype(np.float32)
    scores[rng.integers(40)] = scores[rng.integers(40)]  # a tie
    for thr in [(0.8, 0.7, 0.5), (0.5, 0.9, 0.2), (0.95, 0.99, 0.9)]:
        got = mask_nms(torch.from_numpy(masks), torch.from_numpy(scores), *thr).tolist()
        assert got == reference_mask_nms(masks, scores, *thr), thr


def test_rules_individually() -> None:
    h, w = 20, 20
    big = np.zeros((h, w), bool)
    big[0:16, 0:16] = True
    dup = big.copy()
    dup[15, :16] = False  # IoU 0.94 with big
    small = np.zeros((h, w), bool)
    small[2:6, 2:6] = True  # inside big: r_big = 16/256 < 0.5, r_small = 1
    far = np.zeros((h, w), bool)
    far[17:20, 17:20] = True
    masks = torch.from_numpy(np.stack([big, dup, small, far]))
    scores = torch.tensor([0.9, 0.95, 0.99, 0.8])
    # dup outranks big -> big dropped by IoU; small is nested in dup -> dropped (whatever its score); far stays
    assert mask_nms(masks, scores, 0.8, 0.7, 0.5).tolist() == [1, 3]
    # score rule: far's 0.8 <= 0.85
    assert mask_nms(masks, scores, 0.8, 0.85, 0.5).tolist() == [1]
    # every score below the threshold -> the 3 best remain eligible
    assert mask_nms(masks, scores, 0.8, 0.999, 0.5).tolist() == [1]


def test_empty_and_zero_area() -> None:
    empty = mask_nms(torch.zeros((0, 4, 4), dtype=torch.bool), torch.zeros(0))
    assert empty.numel() == 0
    masks = torch.zeros((2, 4, 4), dtype=torch.bool)
    masks[1, :2, :2] = True
    assert mask_nms(masks, torch.tensor([0.9, 0.8]), score_thr=0.1).tolist() == [1]


def test_pairwise_intersections_chunked() -> None:
    rng = np.random.default_rng(3)
    m = torch.from_numpy(rng.random((7, 9, 11)) < 0.4)
    ref = m.reshape(7, -1).float() @ m.reshape(7, -1).float().T
    assert torch.equal(pairwise_intersections(m, chunk_elements=20), ref)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="bool"):
        mask_nms(torch.zeros((2, 4, 4)), torch.zeros(2))
    with pytest.raises(ValueError, match="scores"):
        mask_nms(torch.zeros((2, 4, 4), dtype=torch.bool), torch.zeros(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA here")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(7)
    masks = torch.from_numpy(random_masks(rng, 60))
    scores = torch.from_numpy(rng.uniform(0.5, 1, 60).astype(np.float32))
    assert mask_nms(masks.cuda(), scores.cuda()).cpu().tolist() == mask_nms(masks, scores).tolist()
