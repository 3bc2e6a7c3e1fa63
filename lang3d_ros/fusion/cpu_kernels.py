"""Fused CPU loops (numba) for the fusion stages, called by ``numba_backend.py``; ``torch_backend.py`` is the
reference.

The torch path runs each step as several full-image tensor passes (gather, compare, scatter, nonzero); on a
CPU that is memory-bound and costs ~75 ms per 640x480 frame. These kernels do the same steps in one or two
loops each, with the same rules and tie-breaks (see ``test/test_fusion_backends.py`` for the parity check):

- ``observe``: vertex map, gradSLAM normals, usable-pixel mask and the world transform in one pass;
- ``project_candidates`` + ``resolve_many_to_one``: projective association, many-to-one by highest confidence,
  then smallest squared distance, then lowest slot (a sequential scan: the same winner as torch's three
  scatter-reduce rounds);
- ``voxel_owner`` / ``neighbour_owner``: the duplicate merge of leftover pixels through a per-frame open-
  addressing hash of the entries in the frame's blocks (newest entry wins, as ``LayeredIndex.find``);
- ``accumulate`` / ``update_points``: dense target ids in first-pixel order, alpha-weighted sums and the
  running-average update of existing points; ``group_new`` / ``write_new_points``: new points;
- ``pixel_slots``: the slot each pixel fused into; ``vote_labels``: per-level segment label votes (weighted
  Boyer-Moore majority);
- ``candidate_blocks``, ``gather_blocks``, ``merge_sorted``, ``compact_sorted``: the voxel-block index
  (``voxel_index.py``); ``seen_after`` and ``kill_unstable``: pruning.

Only for CPU tensors (float32 geometry, int64 slots); numba is optional: without it PointMap uses torch.
Float sums may differ from torch's in the last bits (different summation order). Each kernel is a serial loop
that releases the GIL; ``run_split`` / ``run_each`` spread row chunks or semantic levels over plain threads.
numba's own parallel loops were not used: their OpenMP pool next to torch's made a loaded 2-core machine up to
40x slower (threads spinning on busy cores).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    from numba import njit

    AVAILABLE = True
except ImportError:  # the torch path is used instead
    AVAILABLE = False

EMPTY = 2**31 - 1  # matches types.SCRATCH_EMPTY

if AVAILABLE:

    @njit(nogil=True, cache=True)
    def _cam_row(depth_m, rays, lo, hi, row, buf):
        """buf (3, W) = camera-frame vertices (x, y, z) of row ``row``; z = 0 (and x = y = 0) where the depth is
        invalid (not finite, <= lo or > hi)."""
        w = depth_m.shape[1]
        for j in range(w):
            d = depth_m[row, j]
            z = d if (np.isfinite(d) and d > lo and d <= hi) else np.float32(0.0)
            buf[0, j] = rays[row, j, 0] * z
            buf[1, j] = rays[row, j, 1] * z
            buf[2, j] = z

    @njit(nogil=True, cache=True)
    def observe(
        depth_m, rays, min_depth_m, max_depth_m, R, t, vw, nw, use, zmin_row, zmax_row, edge_normals, row0, row1
    ):
        """(H, W) depth, (H, W, 2) rays, R (3, 3), t (3,) float32 -> fills, for rows row0..row1-1, vw, nw
        (H*W, 3) world vertices and normals, use (H*W,) usable pixels, zmin_row / zmax_row (H,) depth range of
        a row's usable pixels (inf / -inf where none). Normals as gradSLAM: the cross product of the forward
        differences along columns (a) and rows (b) of the camera-frame vertex map (the last column / row reuses
        the previous difference); a pixel is usable when its depth and the four depths its normal uses are valid
        and the normal is non-zero. With ``edge_normals`` a difference whose next pixel has no depth is taken from
        the previous pixel instead (``vertex.edge_normal_map``). Camera-frame vertices are computed once per row
        (two rolling row buffers; the row above only at such pixels)."""
        h, w = depth_m.shape
        lo = max(min_depth_m, np.float32(0.0))
        A = np.empty((3, w), np.float32)
        B = np.empty((3, w), np.float32)
        ra, rb = -1, -1
        for i in range(row0, row1):
            r0, r1 = (i, i + 1) if i < h - 1 else (h - 2, h - 1)
            if ra != r0:
                if rb == r0:
                    A, B = B, A
                    ra, rb = rb, ra
                else:
                    _cam_row(depth_m, rays, lo, max_depth_m, r0, A)
                    ra = r0
            if rb != r1:
                _cam_row(depth_m, rays, lo, max_depth_m, r1, B)
                rb = r1
            own = A if i < h - 1 else B
            zmin, zmax = np.inf, -np.inf
            for j in range(w):
                j1 = j + 1 if j < w - 1 else w - 1
                j0 = j if j < w - 1 else w - 2
                p = i * w + j
                vx, vy, z = own[0, j], own[1, j], own[2, j]
                za0, za1 = own[2, j0], own[2, j1]
                zb0, zb1 = A[2, j], B[2, j]
                ax = own[0, j1] - own[0, j0]
                ay = own[1, j1] - own[1, j0]
                az = za1 - za0
                bx = B[0, j] - A[0, j]
                by = B[1, j] - A[1, j]
                bz = zb1 - zb0
                if edge_normals and z != 0:
                    if (za0 == 0 or za1 == 0) and 0 < j < w - 1 and own[2, j - 1] != 0:  # left instead of right
                        za0, za1 = own[2, j - 1], z
                        ax, ay, az = vx - own[0, j - 1], vy - own[1, j - 1], z - za0
                    if (zb0 == 0 or zb1 == 0) and 0 < i < h - 1:  # the row above instead of the row below
                        d = depth_m[i - 1, j]
                        zu = d if (np.isfinite(d) and d > lo and d <= max_depth_m) else np.float32(0.0)
                        if zu != 0:
                            zb0, zb1 = zu, z
                            bx, by, bz = vx - rays[i - 1, j, 0] * zu, vy - rays[i - 1, j, 1] * zu, z - zu
                nx = ay * bz - az * by
                ny = az * bx - ax * bz
                nz = ax * by - ay * bx
                nn = math.sqrt(nx * nx + ny * ny + nz * nz)
                if nn == 0 or z == 0:
                    nx = ny = nz = np.float32(0.0)
                else:
                    nx, ny, nz = nx / nn, ny / nn, nz / nn
                good = z != 0 and za0 != 0 and za1 != 0 and zb0 != 0 and zb1 != 0 and (nx != 0 or ny != 0 or nz != 0)
                use[p] = good
                if good:
                    zmin, zmax = min(zmin, z), max(zmax, z)
                vw[p, 0] = R[0, 0] * vx + R[0, 1] * vy + R[0, 2] * z + t[0]
                vw[p, 1] = R[1, 0] * vx + R[1, 1] * vy + R[1, 2] * z + t[1]
                vw[p, 2] = R[2, 0] * vx + R[2, 1] * vy + R[2, 2] * z + t[2]
                nw[p, 0] = R[0, 0] * nx + R[0, 1] * ny + R[0, 2] * nz
                nw[p, 1] = R[1, 0] * nx + R[1, 1] * ny + R[1, 2] * nz
                nw[p, 2] = R[2, 0] * nx + R[2, 1] * ny + R[2, 2] * nz
            zmin_row[i], zmax_row[i] = zmin, zmax

    @njit(nogil=True, cache=True)
    def _pixel_of(px, py, pz, R, t, fx, fy, cx, cy, h, w):
        """World point -> (z, row, column) of the pixel it projects to in a camera at (R_world_cam, t_world_cam);
        row -1 when it is behind the camera or outside the image. The association's bounds and rounding."""
        dx, dy, dz = px - t[0], py - t[1], pz - t[2]
        z = R[0, 2] * dx + R[1, 2] * dy + R[2, 2] * dz
        if not z > 0:
            return z, -1, -1
        x = R[0, 0] * dx + R[1, 0] * dy + R[2, 0] * dz
        y = R[0, 1] * dx + R[1, 1] * dy + R[2, 1] * dz
        u = x / z * fx + cx
        v = y / z * fy + cy
        if not (u > -1e-3 and u < w - 0.999 and v > -1e-3 and v < h - 0.999):
            return z, -1, -1
        return z, min(max(int(np.rint(v)), 0), h - 1), min(max(int(np.rint(u)), 0), w - 1)

    @njit(nogil=True, cache=True)
    def _gate2(gate, R, t, vw, q):
        """Squared association gate at pixel q: min(d0^2 + k^2 zq^4, cap^2), zq its depth along the optical axis
        (R's third column; gate = ``FusionConfig.gate_terms``)."""
        zq = R[0, 2] * (vw[q, 0] - t[0]) + R[1, 2] * (vw[q, 1] - t[1]) + R[2, 2] * (vw[q, 2] - t[2])
        z2 = zq * zq
        return min(gate[0] + gate[1] * z2 * z2, gate[2])

    @njit(nogil=True, cache=True)
    def project_candidates(
        xyz,
        nrm,
        conf,
        alive,
        slot_key,
        cand,
        cand_key,
        R,
        t,
        fx,
        fy,
        cx,
        cy,
        h,
        w,
        use,
        vw,
        nw,
        gate,
        cos_gate,
        q_out,
        d2_out,
        conf_out,
        k0,
        k1,
    ):
        """Candidates k0..k1-1 of the index entries (cand_key, cand): q_out[k] = the pixel a live entry projects
        to and passes the distance and normal gates with (-1 otherwise), d2_out / conf_out its squared distance
        and the point's confidence. gate: (d0^2, k^2, cap^2) float32, ``FusionConfig.gate_terms`` (the distance
        gate at the pixel's depth zq: min(d0^2 + k^2 zq^4, cap^2)). Returns the number of live entries (slot alive
        and still holding the key)."""
        n_live = 0
        for k in range(k0, k1):
            q_out[k] = -1
            c = cand[k]
            if not alive[c] or slot_key[c] != cand_key[k]:
                continue
            n_live += 1
            _, iv, iu = _pixel_of(xyz[c, 0], xyz[c, 1], xyz[c, 2], R, t, fx, fy, cx, cy, h, w)
            if iv < 0:
                continue
            q = iv * w + iu
            if not use[q]:
                continue
            ex, ey, ez = xyz[c, 0] - vw[q, 0], xyz[c, 1] - vw[q, 1], xyz[c, 2] - vw[q, 2]
            d2 = ex * ex + ey * ey + ez * ez
            dot = nrm[c, 0] * nw[q, 0] + nrm[c, 1] * nw[q, 1] + nrm[c, 2] * nw[q, 2]
            if dot > cos_gate and d2 < _gate2(gate, R, t, vw, q):
                q_out[k], d2_out[k], conf_out[k] = q, d2, conf[c]
        return n_live

    @njit(nogil=True, cache=True)
    def resolve_many_to_one(cand, q_in, d2_in, conf_in, target):
        """target[pixel] = the winning candidate slot among those projecting to it: highest confidence, then
        smallest squared distance, then lowest slot (target holds -1 on entry; a sequential scan, so any order of
        candidates gives the same winner). Returns the number of pixels matched."""
        best_conf = np.empty(target.shape[0], np.float32)
        best_d2 = np.empty(target.shape[0], np.float32)
        n_matched = 0
        for k in range(cand.shape[0]):
            q = q_in[k]
            if q < 0:
                continue
            c, cf, d2 = cand[k], conf_in[k], d2_in[k]
            cur = target[q]
            n_matched += cur < 0
            if (
                cur < 0
                or cf > best_conf[q]
                or (cf == best_conf[q] and (d2 < best_d2[q] or (d2 == best_d2[q] and c < cur)))
            ):
                target[q] = c
                best_conf[q] = cf
                best_d2[q] = d2
        return n_matched

    @njit(inline="always")
    def _slot_hash(key, mask_bits):
        return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - mask_bits))

    @njit(nogil=True, cache=True)
    def build_table(keys, slots, alive, slot_key):
        """Open-addressing hash over the entries (keys, slots) in order, a later equal key overwriting: (2^bits, 2)
        int64 rows [key, slot of the newest entry with that key, or -1 when that entry is not live (its slot dead
        or holding another key)], key -1 marking an empty row; and bits. Key and slot share a cache line."""
        bits = 4
        while (1 << bits) < 2 * keys.shape[0] + 1:
            bits += 1
        mask = (1 << bits) - 1
        table = np.full((1 << bits, 2), -1, np.int64)
        for i in range(keys.shape[0]):
            k, s = keys[i], slots[i]
            hsh = _slot_hash(k, bits)
            while table[hsh, 0] != -1 and table[hsh, 0] != k:
                hsh = (hsh + 1) & mask
            table[hsh, 0] = k
            table[hsh, 1] = s if (alive[s] and slot_key[s] == k) else -1
        return table, bits

    @njit(inline="always")
    def _floor(q):
        """floor of a finite float as int64 (= np.int64(math.floor(q)), without the libm call): truncate, then
        step down where truncation rounded up (negative non-integers)."""
        i = np.int64(q)
        return i - (q < i)

    @njit(inline="always")
    def _voxel_key(x, y, z, voxel_size_m, offset, local_bits, block_bits):
        vx = _floor(x / voxel_size_m) + offset
        vy = _floor(y / voxel_size_m) + offset
        vz = _floor(z / voxel_size_m) + offset
        lm = (1 << local_bits) - 1
        block = ((((vx >> local_bits) << block_bits) | (vy >> local_bits)) << block_bits) | (vz >> local_bits)
        local = ((((vx & lm) << local_bits) | (vy & lm)) << local_bits) | (vz & lm)
        return (block << (3 * local_bits)) | local

    @njit(nogil=True, cache=True)
    def voxel_owner(
        target, use, vw, voxel_size_m, offset, local_bits, block_bits, table, bits, merge, pixel_key, i0, i1
    ):
        """Leftover pixels i0..i1-1 (use, target < 0): pixel_key = their voxel key; with ``merge`` target = the
        live point owning that voxel when the hash ``table`` (``build_table``) has one. Returns the number merged.
        Two loops: the keys first, then the probes, whose independent cache misses then overlap."""
        left = np.empty(i1 - i0, np.int64)
        n_left = 0
        for i in range(i0, i1):
            if use[i] and target[i] < 0:
                pixel_key[i] = _voxel_key(vw[i, 0], vw[i, 1], vw[i, 2], voxel_size_m, offset, local_bits, block_bits)
                left[n_left] = i
                n_left += 1
        if not merge:
            return 0
        mask = (1 << bits) - 1
        merged = 0
        for j in range(n_left):
            i = left[j]
            k = pixel_key[i]
            hsh = _slot_hash(k, bits)
            while True:
                tkey = table[hsh, 0]
                if tkey == k:
                    s = table[hsh, 1]
                    if s >= 0:
                        target[i] = s
                        merged += 1
                    break
                if tkey == -1:
                    break
                hsh = (hsh + 1) & mask
        return merged

    @njit(nogil=True, cache=True)
    def neighbour_owner(target, use, vw, nw, xyz, nrm, h, w, r, gate, R, t, cos_gate, out, row0, row1):
        """Leftover pixels of rows row0..row1-1: out = the nearest gated point owning a pixel within r
        (row-major first on ties), -1 where none (reads ``target`` only, so rows can be split between threads).
        gate, R, t: as ``project_candidates``. A neighbour without an owner, or with the owner just tested on
        its row, is skipped (a repeat cannot be strictly nearer)."""
        for row in range(row0, row1):
            for col in range(w):
                i = row * w + col
                out[i] = -1
                if not use[i] or target[i] >= 0:
                    continue
                best, bs = np.float32(np.inf), -1
                g2 = _gate2(gate, R, t, vw, i)
                px, py, pz = vw[i, 0], vw[i, 1], vw[i, 2]
                qx, qy, qz = nw[i, 0], nw[i, 1], nw[i, 2]
                for rr in range(max(row - r, 0), min(row + r + 1, h)):
                    last = -1
                    for cc in range(max(col - r, 0), min(col + r + 1, w)):
                        s = target[rr * w + cc]
                        if s < 0 or s == last:
                            continue
                        last = s
                        ex, ey, ez = xyz[s, 0] - px, xyz[s, 1] - py, xyz[s, 2] - pz
                        d2 = ex * ex + ey * ey + ez * ez
                        dot = nrm[s, 0] * qx + nrm[s, 1] * qy + nrm[s, 2] * qz
                        if d2 < g2 and dot > cos_gate and d2 < best:
                            best, bs = d2, s
                out[i] = bs

    @njit(nogil=True, cache=True)
    def take_owners(target, use, owner, use_owner, pixel_key):
        """Leftover pixels (use, target < 0) take owner[i] when >= 0 (``use_owner``); the rest are returned:
        (number merged, their pixel indices ascending, their voxel keys)."""
        n = target.shape[0]
        left = np.empty(n, np.int64)
        n_left = 0
        merged = 0
        for i in range(n):
            if not use[i] or target[i] >= 0:
                continue
            if use_owner and owner[i] >= 0:
                target[i] = owner[i]
                merged += 1
            else:
                left[n_left] = i
                n_left += 1
        left = left[:n_left].copy()
        keys = np.empty(n_left, np.int64)
        for j in range(n_left):
            keys[j] = pixel_key[left[j]]
        return merged, left, keys

    @njit(nogil=True, cache=True)
    def accumulate(target, vw, nw, rgb_u8, alpha, n_new, scratch):
        """Pixels -> targets: existing slots get dense ids in first-pixel order, new point j (target -(2 + j))
        gets n_old + j, unused pixels n_t. Returns uslots (n_old,), tid (H*W,), wsum, wmax (n_t,), mean (n_t, 9)
        of [xyz, normal, rgb / 255]. ``scratch`` (per slot, EMPTY on entry) is left EMPTY. One pass over the
        pixels sums into rows of a (H*W, 11) array (n_old + n_new <= H*W): existing targets from the top, each row
        cleared when its target is first met, new points at the bottom; then the means, in the order above."""
        n = target.shape[0]
        uslots = np.empty(n, np.int64)
        tid = np.empty(n, np.int64)
        acc = np.empty((n, 11), np.float32)  # [sum alpha, max alpha, 9 alpha-weighted sums]
        acc[n - n_new :] = 0
        inv255 = np.float32(1.0 / 255.0)
        n_old = 0
        for i in range(n):
            s = target[i]
            if s >= 0:
                k = scratch[s]
                if k == EMPTY:
                    k = n_old
                    scratch[s] = k
                    uslots[k] = s
                    n_old += 1
                    acc[k] = 0
                tid[i] = k
            elif s <= -2:
                k = n - n_new - 2 - s
            else:
                continue
            a = alpha[i]
            acc[k, 0] += a
            if a > acc[k, 1]:
                acc[k, 1] = a
            for c in range(3):
                acc[k, 2 + c] += vw[i, c] * a
                acc[k, 5 + c] += nw[i, c] * a
                acc[k, 8 + c] += rgb_u8[i, c] * inv255 * a
        n_t = n_old + n_new
        for i in range(n):  # ids of the new points and unused pixels, now that n_old is known
            s = target[i]
            if s < 0:
                tid[i] = n_old - 2 - s if s <= -2 else n_t
        wsum = np.empty(n_t, np.float32)
        wmax = np.empty(n_t, np.float32)
        mean = np.empty((n_t, 9), np.float32)
        for k in range(n_t):
            r = k if k < n_old else n - n_new + k - n_old
            wsum[k], wmax[k] = acc[r, 0], acc[r, 1]
            for c in range(9):
                mean[k, c] = acc[r, 2 + c] / acc[r, 0]
        for j in range(n_old):
            scratch[uslots[j]] = EMPTY
        return uslots[:n_old].copy(), tid, wsum, wmax, mean

    @njit(nogil=True, cache=True)
    def update_points(uslots, wmax, mean, xyz, nrm, rgb, conf, j0, j1):
        """Running averages of existing points uslots[j0:j1] (distinct): c <- c + w, x <- x + w / (c + w)
        (x_frame - x); normals renormalised."""
        for j in range(j0, j1):
            s = uslots[j]
            wf = wmax[j]
            cn = conf[s] + wf
            b = wf / cn
            for c in range(3):
                xyz[s, c] += b * (mean[j, c] - xyz[s, c])
                rgb[s, c] += b * (mean[j, 6 + c] - rgb[s, c])
            nx = nrm[s, 0] + b * (mean[j, 3] - nrm[s, 0])
            ny = nrm[s, 1] + b * (mean[j, 4] - nrm[s, 1])
            nz = nrm[s, 2] + b * (mean[j, 5] - nrm[s, 2])
            nn = max(math.sqrt(nx * nx + ny * ny + nz * nz), 1e-12)
            nrm[s, 0], nrm[s, 1], nrm[s, 2] = nx / nn, ny / nn, nz / nn
            conf[s] = cn

    @njit(nogil=True, cache=True)
    def candidate_blocks(use, vw, block_m, blo, dims, block_offset, block_bits):
        """Block keys (ascending) of the blocks holding a usable pixel's point, dilated by one block, over the
        dense grid of ``dims`` blocks starting at block ``blo`` (which has a one-block margin all round)."""
        nx, ny, nz = dims[0], dims[1], dims[2]
        occ = np.zeros(nx * ny * nz, np.bool_)
        for i in range(use.shape[0]):
            if use[i]:
                # clamped: a vertex rounding just outside the box belongs to the margin block next to it
                bx = min(max(_floor(vw[i, 0] / block_m) - blo[0], 0), nx - 1)
                by = min(max(_floor(vw[i, 1] / block_m) - blo[1], 0), ny - 1)
                bz = min(max(_floor(vw[i, 2] / block_m) - blo[2], 0), nz - 1)
                occ[(bx * ny + by) * nz + bz] = True
        dil = np.zeros(nx * ny * nz, np.bool_)
        n_keys = 0
        for x in range(nx):
            for y in range(ny):
                for z in range(nz):
                    if occ[(x * ny + y) * nz + z]:
                        for xx in range(max(x - 1, 0), min(x + 2, nx)):
                            for yy in range(max(y - 1, 0), min(y + 2, ny)):
                                for zz in range(max(z - 1, 0), min(z + 2, nz)):
                                    c = (xx * ny + yy) * nz + zz
                                    if not dil[c]:
                                        dil[c] = True
                                        n_keys += 1
        keys = np.empty(n_keys, np.int64)
        k = 0
        hi = 1 << block_bits
        for x in range(nx):
            cx = x + blo[0] + block_offset
            for y in range(ny):
                cy = y + blo[1] + block_offset
                for z in range(nz):
                    if dil[(x * ny + y) * nz + z]:
                        cz = z + blo[2] + block_offset
                        if 0 <= cx < hi and 0 <= cy < hi and 0 <= cz < hi:
                            keys[k] = (((cx << block_bits) | cy) << block_bits) | cz
                            k += 1
        return keys[:k].copy()

    @njit(nogil=True, cache=True)
    def gather_blocks(keys, slots, block_keys, shift):
        """Entries of a sorted level whose key lies in one of the (ascending) blocks: (keys, slots)."""
        nb = block_keys.shape[0]
        lo = np.empty(nb, np.int64)
        hi = np.empty(nb, np.int64)
        total = 0
        for b in range(nb):
            lo[b] = np.searchsorted(keys, block_keys[b] << shift)
            hi[b] = np.searchsorted(keys, (block_keys[b] + 1) << shift)
            total += hi[b] - lo[b]
        out_k = np.empty(total, np.int64)
        out_s = np.empty(total, np.int64)
        o = 0
        for b in range(nb):
            for i in range(lo[b], hi[b]):
                out_k[o] = keys[i]
                out_s[o] = slots[i]
                o += 1
        return out_k, out_s

    @njit(nogil=True, cache=True)
    def merge_sorted(keys, slots, new_keys, new_slots):
        """Linear merge of ascending (new_keys, new_slots) into ascending (keys, slots); new entries go after
        equal existing keys and keep their order."""
        n, m = keys.shape[0], new_keys.shape[0]
        out_k = np.empty(n + m, np.int64)
        out_s = np.empty(n + m, np.int64)
        i = j = 0
        for o in range(n + m):
            if j >= m or (i < n and keys[i] <= new_keys[j]):
                out_k[o], out_s[o] = keys[i], slots[i]
                i += 1
            else:
                out_k[o], out_s[o] = new_keys[j], new_slots[j]
                j += 1
        return out_k, out_s

    @njit(nogil=True, cache=True)
    def compact_sorted(keys, slots, slot_key, alive):
        """The entries whose slot is alive and still holds the entry's key, order kept."""
        keep = np.empty(keys.shape[0], np.bool_)
        n = 0
        for i in range(keys.shape[0]):
            s = slots[i]
            keep[i] = alive[s] and slot_key[s] == keys[i]
            n += keep[i]
        out_k = np.empty(n, np.int64)
        out_s = np.empty(n, np.int64)
        o = 0
        for i in range(keys.shape[0]):
            if keep[i]:
                out_k[o], out_s[o] = keys[i], slots[i]
                o += 1
        return out_k, out_s

    @njit(nogil=True, cache=True)
    def group_new(left, keys, order, target, merge):
        """Leftover pixels ``left`` with voxel ``keys`` become new points, ids in ascending key order: with
        ``merge`` one point per distinct key, else one per pixel (stable). ``order`` is a stable argsort of
        ``keys`` (numpy's, ~2x numba's). Writes target[left] = -(2 + id) and returns the new points' keys
        (ascending)."""
        new_keys = np.empty(keys.shape[0], np.int64)
        n = 0
        for j in range(order.shape[0]):
            k = keys[order[j]]
            if not merge or n == 0 or new_keys[n - 1] != k:
                new_keys[n] = k
                n += 1
            target[left[order[j]]] = -(2 + n - 1)
        return new_keys[:n].copy()

    @njit(nogil=True, cache=True)
    def write_new_points(slots, mean, wmax, n_old, new_keys, frame_no, xyz, nrm, rgb, conf, slot_key, birth, alive):
        """New point j (slot slots[j]) from frame mean row n_old + j: position, unit normal, colour, confidence
        (its max pixel alpha), voxel key, birth frame, alive."""
        for j in range(slots.shape[0]):
            s, r = slots[j], n_old + j
            nn = max(math.sqrt(mean[r, 3] ** 2 + mean[r, 4] ** 2 + mean[r, 5] ** 2), 1e-12)
            for c in range(3):
                xyz[s, c] = mean[r, c]
                nrm[s, c] = mean[r, 3 + c] / nn
                rgb[s, c] = mean[r, 6 + c]
            conf[s] = wmax[r]
            slot_key[s] = new_keys[j]
            birth[s] = frame_no
            alive[s] = True

    @njit(nogil=True, cache=True)
    def seen_after(slots, xyz, depth_mm, R, t, intr, frame_no, born, gate, mm, out, j0, j1):
        """For j in j0..j1-1: out[j] = whether point slots[j] projects, at depth z > 0, into a view k with
        frame_no[k] > born whose depth d = depth_mm * mm > 0 there has z - d <= the association gate at d (gate:
        ``FusionConfig.gate_terms`` float32). The association's projection, bounds and rounding; views in slot
        order (any order gives the same answer)."""
        n_views, h, w = depth_mm.shape
        for j in range(j0, j1):
            c = slots[j]
            out[j] = False
            for k in range(n_views):
                if frame_no[k] <= born:
                    continue
                z, iv, iu = _pixel_of(
                    xyz[c, 0], xyz[c, 1], xyz[c, 2], R[k], t[k], intr[k, 0], intr[k, 1], intr[k, 2], intr[k, 3], h, w
                )
                if iv < 0:
                    continue
                d = np.float32(depth_mm[k, iv, iu]) * mm
                if not d > 0:
                    continue
                diff, d2 = z - d, d * d
                if diff <= 0 or diff * diff <= min(gate[0] + gate[1] * d2 * d2, gate[2]):
                    out[j] = True
                    break

    @njit(nogil=True, cache=True)
    def kill_unstable(slots, born, stable_confidence, birth, alive, conf):
        """Of ``slots`` (born in or before frame ``born``), kill those still alive from such a birth (a slot reused
        later has a later birth) whose confidence is below ``stable_confidence``: alive False, confidence 0.
        Returns the killed slots."""
        dead = np.empty(slots.shape[0], np.int64)
        n = 0
        for j in range(slots.shape[0]):
            s = slots[j]
            if alive[s] and birth[s] <= born and conf[s] < stable_confidence:
                alive[s] = False
                conf[s] = 0.0
                dead[n] = s
                n += 1
        return dead[:n].copy()

    @njit(nogil=True, cache=True)
    def pixel_slots(target, slots, alpha):
        """target (P,) (slot, -(2 + new id) or -1), slots (n_new,) the new points' slots, alpha (P,) -> pixel_slot
        (P,) int64 (-1 unused) and pixel_alpha (P,) float32 (0 where unused)."""
        n = target.shape[0]
        out = np.empty(n, np.int64)
        out_alpha = np.zeros(n, np.float32)
        for i in range(n):
            t = target[i]
            s = t if t >= 0 else (slots[-2 - t] if t <= -2 else -1)
            out[i] = s
            if s >= 0:
                out_alpha[i] = alpha[i]
        return out, out_alpha

    @njit(nogil=True, cache=True)
    def vote_labels(pixel_slot, n_used, alive, scratch, alpha, labels, label, weight):
        """Every level's vote, in one pass over the pixels: per live slot named by pixel_slot (P,) and level, the
        label of labels (L, P) with the largest alpha mass m among its pixels (ties: lowest label; -1 does not
        vote) updates (label, weight) (L, C) by weighted Boyer-Moore: same label w += m, else w -= m and a
        negative w switches to the label with -w. Per slot (dense ids handed out on first touch, first-pixel
        order) and level the first label's mass is kept inline and any further label in a short linked list (a
        point's pixels carry one or two labels). ``scratch`` (per slot, EMPTY on entry) is left EMPTY."""
        n, n_lv = pixel_slot.shape[0], labels.shape[0]
        uslots = np.empty(n, np.int64)
        f_label = np.empty((n, n_lv), np.int32)  # rows 0..n_t-1 used, each set when its slot is first met
        f_mass = np.empty((n, n_lv), np.float32)
        head = np.empty((n, n_lv), np.int64)
        e_label = np.empty(n * n_lv, np.int32)
        e_mass = np.empty(n * n_lv, np.float32)
        e_next = np.empty(n * n_lv, np.int64)
        n_t = 0
        n_e = 0
        for i in range(n):
            s = pixel_slot[i]
            if s < 0 or s >= n_used or not alive[s]:
                continue
            t = scratch[s]
            if t == EMPTY:
                t = n_t
                scratch[s] = t
                uslots[t] = s
                n_t += 1
                for lv in range(n_lv):
                    f_label[t, lv], f_mass[t, lv], head[t, lv] = -1, 0, -1
            a = alpha[i]
            for lv in range(n_lv):
                lab = labels[lv, i]
                if lab < 0:
                    continue
                if f_label[t, lv] == lab:
                    f_mass[t, lv] += a
                elif f_label[t, lv] < 0:
                    f_label[t, lv], f_mass[t, lv] = lab, a
                else:
                    e = head[t, lv]
                    while e >= 0 and e_label[e] != lab:
                        e = e_next[e]
                    if e >= 0:
                        e_mass[e] += a
                    else:
                        e_label[n_e], e_mass[n_e], e_next[n_e] = lab, a, head[t, lv]
                        head[t, lv] = n_e
                        n_e += 1
        for t in range(n_t):
            s = uslots[t]
            scratch[s] = EMPTY
            for lv in range(n_lv):
                best_l, best_m = f_label[t, lv], f_mass[t, lv]
                if best_l < 0:
                    continue
                e = head[t, lv]
                while e >= 0:
                    if e_mass[e] > best_m or (e_mass[e] == best_m and e_label[e] < best_l):
                        best_l, best_m = e_label[e], e_mass[e]
                    e = e_next[e]
                if label[lv, s] == best_l:
                    weight[lv, s] += best_m
                else:
                    w = weight[lv, s] - best_m
                    if w < 0:
                        label[lv, s] = best_l
                        w = -w
                    weight[lv, s] = w


def run_split(kernel, n: int, n_threads: int, *args, align: int = 1) -> list:
    """kernel(*args, start, stop) over [0, n) in n_threads contiguous chunks (multiples of ``align``), on
    Python threads (the kernels release the GIL). Returns the kernels' results in chunk order. Plain threads
    rather than numba's OpenMP pool: a chunk whose thread is descheduled delays the frame, it does not spin."""
    if n_threads <= 1 or n < 2 * align * n_threads:
        return [kernel(*args, 0, n)]
    step = -(-n // (n_threads * align)) * align
    bounds = [(a, min(a + step, n)) for a in range(0, n, step)]
    futures = [_pool(n_threads).submit(kernel, *args, a, b) for a, b in bounds[1:]]
    first = kernel(*args, *bounds[0])
    return [first] + [f.result() for f in futures]


def run_each(calls: list, n_threads: int) -> list:
    """[(kernel, args), ...] run concurrently on up to n_threads plain threads (independent kernels, e.g. one
    per semantic level); results in order."""
    if n_threads <= 1 or len(calls) < 2:
        return [k(*a) for k, a in calls]
    futures = [_pool(n_threads).submit(k, *a) for k, a in calls[1:]]
    first = calls[0][0](*calls[0][1])
    return [first] + [f.result() for f in futures]


_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(n_threads: int) -> ThreadPoolExecutor:
    if n_threads not in _pools:
        _pools[n_threads] = ThreadPoolExecutor(max_workers=n_threads - 1, thread_name_prefix="fusion-kernel")
    return _pools[n_threads]
