"""Synthetic processes with known critical states: occluding discs, a tilting glass, a glass pushed over.

A video model that jumps from one stable state to another skips the critical moment between
them (three puppies become four; the juice is in the glass, then on the table). These
processes make that moment exact, so a detector can be scored against it.

``occlusion_scenes`` — 32 × 32 grayscale frames of four discs: one large bright *occluder*
    (radius R, in front) and three small grey discs (radius r < R) that wobble on small circles
    around fixed anchors. The occluder glides in front of them along a smooth path that passes
    over one of the small discs, hiding it completely for a while. With d the distance
    between the occluder's centre and a small disc's centre:

    * d > R + r + touch: separate (stable);
    * R - r < d <= R + r + touch: touching or partly hidden — **critical**;
    * d <= R - r: completely hidden (stable; the visible count drops by one).

    So the visible count goes 4 → 3 → 4 through two short runs of critical frames. Every frame
    comes with its visible count and its critical flag.

``tilting_glass`` — a rectangular glass of width W and height H, filled to height h0 >= H/2,
    tilts about its bottom-left corner by an angle θ (its top moving left) that grows smoothly
    along each trajectory. The liquid surface stays horizontal; the liquid reaches the rim when
    the surface, through the rim's lower corner, bounds the original volume:
    ``tan θc = 2 (H - h0) / W`` (volume of liquid W·h0 = W·H - W² tan θ / 2 while the surface
    meets the side wall, i.e. while W tan θ <= H). Past θc the excess spills into a puddle on
    the table. Frames within ``critical_width`` degrees of θc are critical; the state is 0
    (all liquid in the glass) before θc and 1 (spilled) after.

    Unlike the occlusion, the glass has no gap between its stable states in picture space: the
    pictures vary continuously through θc, and the critical band is a thin strip (±2°, about ±1.5
    frames) of a 2-D sheet (fill level × angle) whose signature is sub-pixel (the surface within a
    fraction of a pixel of the rim; a puddle 1-2 px long at θc + 2°). Once the puddle has run out
    of the picture the fill level is no longer visible, so distinct spilled states (and, at 0°,
    fill levels within a quarter pixel) render identically: 163 of the 1 797 stable frames of
    ``tilting_glass(40, seed=1)`` are exact duplicates. See ``docs/manifold.md``.

``tipping_glass`` — a tipping point in the strict sense: a glass (W × H, part filled) is pushed
    slowly about its bottom-left corner until its centre of mass (glass and liquid, the surface
    horizontal) passes over that corner, at an angle θc computed from the static balance; then
    it falls freely onto its side and the liquid spills into a puddle. The stable states are
    "standing, tilted by less than θc" and "lying in its puddle"; the critical frames are the
    balance point and the fall (θc - 2° up to landing, 3-9 frames), states a stable video
    passes through quickly and a generator that jumps between stable states skips.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .toy import _check_seed

__all__ = ["occlusion_scenes", "OcclusionScenes", "tilting_glass", "tipping_glass", "GlassScenes", "critical_events",
           "OCCLUSION_ANCHORS", "count_discs", "glass_critical_angle", "glass_tipping_angle"]

#: default anchors of the three small discs in a 32 × 32 frame (x, y), in pixels
OCCLUSION_ANCHORS = ((8.0, 9.0), (24.0, 11.0), (15.0, 24.0))


class OcclusionScenes(NamedTuple):
    """Trajectories of the occlusion process.

    ``frames`` (T, F, 1, S, S) float32 in [0, 1]; ``count`` (T, F) int64 visible discs (4 or 3);
    ``critical`` (T, F) bool; ``centres`` (T, F, 4, 2) float64 disc centres (x, y) in pixels,
    the occluder first; ``radii`` (4,).
    """

    frames: np.ndarray
    count: np.ndarray
    critical: np.ndarray
    centres: np.ndarray
    radii: np.ndarray

    def stable_frames(self) -> np.ndarray:
        """The non-critical frames (n, 1, S, S): what a model of the stable states is fitted on."""
        return self.frames[~self.critical]


class GlassScenes(NamedTuple):
    """Trajectories of the tilting glass.

    ``frames`` (T, F, 1, S, S) float32; ``angle`` (T, F) degrees; ``critical_angle`` (T,) degrees;
    ``state`` (T, F) int64: 0 liquid all in the glass, 1 spilled; ``critical`` (T, F) bool.
    """

    frames: np.ndarray
    angle: np.ndarray
    critical_angle: np.ndarray
    state: np.ndarray
    critical: np.ndarray

    def stable_frames(self) -> np.ndarray:
        return self.frames[~self.critical]


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _check_pos(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


def _coverage(size: int, cx: np.ndarray, cy: np.ndarray, radius: float) -> np.ndarray:
    """Anti-aliased disc coverage (..., S, S): clip(r - |p - c| + 1/2, 0, 1) at pixel centres."""
    g = np.arange(size) + 0.5
    dx = g[None, :] - cx[..., None, None]          # (..., 1, S): varies along x (columns)
    dy = g[:, None] - cy[..., None, None]          # (..., S, 1)
    return np.clip(radius - np.sqrt(dx * dx + dy * dy) + 0.5, 0.0, 1.0)


def _render_discs(centres: np.ndarray, radii: np.ndarray, size: int, grey: float) -> np.ndarray:
    """(n, 4, 2) centres → (n, S, S): small discs at ``grey``, the occluder (index 0) white, in front."""
    img = np.zeros(centres.shape[:1] + (size, size))
    for j in range(1, centres.shape[1]):
        img = np.maximum(img, grey * _coverage(size, centres[:, j, 0], centres[:, j, 1], radii[j]))
    occ = _coverage(size, centres[:, 0, 0], centres[:, 0, 1], radii[0])
    return img * (1.0 - occ) + occ


def occlusion_scenes(
    n_trajectories: int,
    n_frames: int = 32,
    seed: int = 0,
    *,
    size: int = 32,
    radius: float = 5.0,
    small_radius: float = 2.0,
    speed: float = 1.0,
    wobble: float = 1.0,
    touch: float = 0.5,
    anchors: tuple[tuple[float, float], ...] = OCCLUSION_ANCHORS,
) -> OcclusionScenes:
    """``n_trajectories`` videos of ``n_frames`` frames (size × size) of four discs; see the module docstring.

    The occluder (radius ``radius``) moves at ``speed`` pixels per frame on a gently curved path
    (a line with a sinusoidal bend of 1.5 px) through a point within 1.5 px of a randomly chosen
    small disc's anchor, starting and ending clear of every small disc, so each trajectory holds
    at least one full 4 → 3 → 4 occlusion. The small discs (radius ``small_radius``) circle
    their anchors at radius ``wobble``. ``touch``: discs closer than this gap count as touching
    (critical). Returns an ``OcclusionScenes``.
    """
    T = _check_int(n_trajectories, "n_trajectories", 1)
    F = _check_int(n_frames, "n_frames", 2)
    size = _check_int(size, "size", 8)
    seed = _check_seed(seed)
    R, r, v = _check_pos(radius, "radius"), _check_pos(small_radius, "small_radius"), _check_pos(speed, "speed")
    if r >= R:
        raise ValueError(f"small_radius: must be smaller than radius ({R}) so that the occluder can hide a disc, got {r}")
    if isinstance(wobble, bool) or not isinstance(wobble, (int, float)) or not 0 <= wobble < R - r:
        raise ValueError(f"wobble: expected a number in [0, radius - small_radius), got {wobble!r}")
    touch = float(touch)
    A = np.asarray(anchors, dtype=np.float64)
    if A.ndim != 2 or A.shape[1] != 2 or len(A) < 1:
        raise ValueError(f"anchors: expected a sequence of (x, y) pairs, got shape {A.shape}")
    if np.any(A < 0) or np.any(A > size):
        raise ValueError(f"anchors: must lie inside the {size} × {size} frame")
    rng = np.random.default_rng(seed)
    radii = np.array([R] + [r] * len(A))
    clear = R + r + touch + wobble + 0.5                # an occluder this far from every anchor touches nothing
    t = np.arange(F, dtype=np.float64)
    centres = np.empty((T, F, 1 + len(A), 2))
    for i in range(T):
        for _ in range(2_000):
            j = rng.integers(len(A))
            through = A[j] + rng.uniform(-1.5, 1.5, 2)
            phi = rng.uniform(0, 2 * np.pi)
            u, w = np.array([np.cos(phi), np.sin(phi)]), np.array([-np.sin(phi), np.cos(phi)])
            t0 = rng.uniform(0.3, 0.7) * (F - 1)         # the frame of closest approach
            s = (t - t0) * v
            bend = 1.5 * np.sin(np.pi * t / (F - 1) + rng.uniform(0, np.pi))
            path = through + s[:, None] * u + bend[:, None] * w
            d_end = np.linalg.norm(path[[0, -1], None, :] - A[None], axis=2)
            if np.all((path >= -1.0) & (path <= size + 1.0)) and np.all(d_end > clear):
                break
        else:
            raise ValueError(f"n_frames: {F} frames at speed {v} cannot carry the occluder over a disc and clear of it inside a {size} × {size} frame; use about 32 frames at speed 1")
        ph = rng.uniform(0, 2 * np.pi, len(A))
        om = rng.choice([-1.0, 1.0], len(A)) * rng.uniform(0.05, 0.15, len(A))   # rad / frame
        centres[i, :, 0] = path
        ang = ph[None, :] + om[None, :] * t[:, None]                             # (F, k)
        centres[i, :, 1:, 0] = A[None, :, 0] + wobble * np.cos(ang)
        centres[i, :, 1:, 1] = A[None, :, 1] + wobble * np.sin(ang)
    d = np.linalg.norm(centres[:, :, 1:] - centres[:, :, :1], axis=3)           # (T, F, k)
    hidden = d <= R - r
    critical = ((d > R - r) & (d <= R + r + touch)).any(axis=2)
    count = (1 + len(A) - hidden.sum(axis=2)).astype(np.int64)
    frames = _render_discs(centres.reshape(T * F, -1, 2), radii, size, grey=0.55)
    frames = frames.reshape(T, F, 1, size, size).astype(np.float32)
    return OcclusionScenes(frames, count, critical, centres, radii)


# ------------------------------------------------------------------ tilting glass
def glass_critical_angle(height: float, width: float, fill: float) -> float:
    """θc in degrees for a W × H glass filled to h0 = fill·H (fill >= 1/2): tan θc = 2 (H - h0) / W."""
    return float(np.degrees(np.arctan2(2.0 * (height - fill * height), width)))


def _liquid_level(theta: np.ndarray, W: float, H: float, area: float) -> np.ndarray:
    """Height c of the horizontal surface (world y) holding ``area`` inside the tilted glass, by bisection."""
    # glass corners in world coordinates, rotated by theta about (0, 0) (top moves left)
    lo = np.full(theta.shape, -W - H)
    hi = np.full(theta.shape, W + H)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        a = _area_below(theta, W, H, mid)
        lo = np.where(a < area, mid, lo)
        hi = np.where(a < area, hi, mid)
    return 0.5 * (lo + hi)


def _area_below(theta: np.ndarray, W: float, H: float, c: np.ndarray, n: int = 400) -> np.ndarray:
    """Area of the tilted W × H rectangle below the world line y = c (midpoint rule over the glass's local x)."""
    xs = (np.arange(n) + 0.5) / n * W                              # local x across the glass
    ct, st = np.cos(theta)[..., None], np.sin(theta)[..., None]
    # local point (x, y) → world y = x sin θ + y cos θ; the local column at x lies below c for y < (c - x sin θ) / cos θ
    ymax = (c[..., None] - xs * st) / ct
    return np.clip(ymax, 0.0, H).sum(axis=-1) * (W / n)


def tilting_glass(
    n_trajectories: int,
    n_frames: int = 48,
    seed: int = 0,
    *,
    size: int = 32,
    max_angle: float = 60.0,
    critical_width: float = 2.0,
) -> GlassScenes:
    """``n_trajectories`` videos of a glass tilting from 0 to about ``max_angle`` degrees; see the module docstring.

    Each trajectory draws a fill fraction in [0.65, 0.9] (so θc = atan(2 (H - h0) / W) varies
    between trajectories) and a smooth, monotone angle schedule θ(t) = max_angle · s(t)^p with a
    random exponent p. The liquid volume kept in the glass after θc is the volume below the rim;
    the rest lies as a puddle on the table, growing with the spilled volume. Frames with
    |θ - θc| <= ``critical_width`` are critical. Returns a ``GlassScenes``.
    """
    T = _check_int(n_trajectories, "n_trajectories", 1)
    F = _check_int(n_frames, "n_frames", 2)
    size = _check_int(size, "size", 16)
    seed = _check_seed(seed)
    max_angle = _check_pos(max_angle, "max_angle")
    if max_angle >= 80:
        raise ValueError(f"max_angle: expected an angle below 80 degrees, got {max_angle}")
    critical_width = _check_pos(critical_width, "critical_width")
    rng = np.random.default_rng(seed)
    W, H = 0.3 * size, 0.5 * size
    pivot = np.array([0.55 * size, 0.85 * size])                   # bottom-left corner of the glass, pixels (y down)
    fill = rng.uniform(0.65, 0.9, T)
    theta_c = np.array([glass_critical_angle(H, W, f) for f in fill])
    s = np.linspace(0.0, 1.0, F)
    p = rng.uniform(0.8, 1.25, T)
    angle = max_angle * s[None, :] ** p[:, None]                    # (T, F) degrees
    th = np.radians(angle)
    area0 = W * H * fill[:, None] * np.ones_like(th)
    rim = W * H - W * W * np.tan(th) / 2.0                          # volume below the rim while W tan θ <= H
    rim = np.where(W * np.tan(th) <= H, rim, H * H / (2 * np.tan(np.maximum(th, 1e-9))))
    kept = np.minimum(area0, rim)
    spilled = area0 - kept
    level = _liquid_level(th, W, H, kept)
    state = (angle > theta_c[:, None]).astype(np.int64)
    critical = np.abs(angle - theta_c[:, None]) <= critical_width

    puddle = np.where(spilled > 0, spilled / 1.5, 0.0)             # thickness 1.5 px, length ∝ volume
    frames = _render_glass(th, level, puddle, W, H, pivot, size)
    return GlassScenes(frames, angle, theta_c, state, critical)


def _render_glass(th: np.ndarray, level: np.ndarray, puddle: np.ndarray, W: float, H: float, pivot: np.ndarray,
                  size: int, ss: int = 4, shift: np.ndarray | None = None) -> np.ndarray:
    """Frames (T, F, 1, S, S) float32 of a W × H glass tilted by ``th`` (T, F) radians about its
    bottom-left corner (``pivot``, pixels, y down, moved right by ``shift`` (T, F) px; the top
    moves left), liquid below the world height ``level`` (T, F), a puddle ``puddle`` (T, F) px
    long on the table left of the rim. Walls 1.0, liquid and puddle 0.5, table 0.8; rendered at
    ``ss``× supersampling."""
    g = (np.arange(size * ss) + 0.5) / ss
    X, Y = np.meshgrid(g, g)                                        # Y grows downwards
    T, F = th.shape
    frames = np.empty((T, F, 1, size, size), dtype=np.float32)
    wy = pivot[1] - Y                                               # world, y up, origin at the pivot
    table = 0.8 * ((wy < -0.2) & (wy > -1.2))
    for i in range(T):
        for f in range(F):
            t_ = th[i, f]
            wx = X - pivot[0] - (0.0 if shift is None else shift[i, f])
            ct, st = np.cos(t_), np.sin(t_)
            # world → local (inverse rotation by +θ counter-clockwise)
            lx = wx * ct + wy * st
            ly = -wx * st + wy * ct
            inside = (lx >= 0) & (lx <= W) & (ly >= 0) & (ly <= H)
            wall = inside & ((lx < 1.0) | (lx > W - 1.0) | (ly < 1.0))
            liquid = inside & (wy <= level[i, f]) & ~wall
            img = 0.5 * liquid + 1.0 * wall
            if puddle[i, f] > 0:
                # on the table (y = 0), starting half a pixel left of the rim (local (0, H))
                x0 = -st * H - 0.5
                pud = (wy >= -0.2) & (wy <= 1.3) & (wx <= x0) & (wx >= x0 - puddle[i, f]) & ~inside
                img = np.maximum(img, 0.5 * pud)
            img = np.maximum(img, table)
            frames[i, f, 0] = img.reshape(size, ss, size, ss).mean(axis=(1, 3))
    return frames


# ------------------------------------------------------------------ tipping glass
def _tip_offset(theta: np.ndarray, W: float, H: float, h0: float, glass_density: float, n: int = 96) -> np.ndarray:
    """World x of the centre of mass of the glass and its liquid (liquid surface horizontal, no
    spill), relative to the pivot, for tilts ``theta`` (radians): positive while the glass would
    fall back upright, zero at the tipping angle. Midpoint rule on an n × n grid of the glass."""
    lx, ly = np.meshgrid((np.arange(n) + 0.5) / n * W, (np.arange(n) + 0.5) / n * H)
    wall = (lx < 1.0) | (lx > W - 1.0) | (ly < 1.0)
    area0 = (W - 2.0) * (h0 - 1.0)                                   # liquid inside the walls
    out = np.empty(np.shape(theta))
    for k, t in enumerate(np.ravel(theta)):
        ct, st = np.cos(t), np.sin(t)
        wx, wy = lx * ct - ly * st, lx * st + ly * ct
        c = _liquid_level(np.array([t]), W - 2.0, H - 1.0, area0)[0]   # the inner cavity's surface ...
        # ... measured from the cavity's own corner (local (1, 1)) → world height of that corner
        c += 1.0 * st + 1.0 * ct
        liquid = ~wall & (wy <= c)
        m = glass_density * wall + liquid
        out.flat[k] = (m * wx).sum() / m.sum()
    return out


def glass_tipping_angle(height: float, width: float, fill: float, glass_density: float = 2.0) -> float:
    """Tipping angle θc in degrees of a W × H glass (walls 1 unit thick, density ``glass_density``
    relative to the liquid) filled to h0 = fill·H, standing on its bottom-left corner: the tilt at
    which the centre of mass of glass and liquid passes over that corner. Found by bisection on
    the static balance (liquid surface horizontal, as in a slow push); ``tan θc = x_cm / y_cm``
    of the upright glass would ignore the liquid's shift towards the pivot."""
    height, width = _check_pos(height, "height"), _check_pos(width, "width")
    if width <= 2 or height <= 1:
        raise ValueError(f"width, height: the walls are 1 unit thick, so expected width > 2 and height > 1, got {width}, {height}")
    if isinstance(fill, bool) or not isinstance(fill, (int, float, np.floating)) or not 1.0 / height <= fill <= 1.0:
        raise ValueError(f"fill: expected a number in [1/height, 1] (the bottom is 1 unit thick), got {fill!r}")
    glass_density = _check_pos(glass_density, "glass_density")
    lo, hi = 0.0, np.radians(89.0)
    h0 = fill * height
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _tip_offset(np.array([mid]), width, height, h0, glass_density)[0] > 0:
            lo = mid
        else:
            hi = mid
    return float(np.degrees(0.5 * (lo + hi)))


def tipping_glass(
    n_trajectories: int,
    n_frames: int = 48,
    seed: int = 0,
    *,
    size: int = 32,
    critical_width: float = 2.0,
) -> GlassScenes:
    """``n_trajectories`` videos of a glass pushed over: it tilts slowly about its bottom-left
    corner until its centre of mass passes over that corner, falls onto its side and spills.

    Geometry (pixels): W = 8, H = 13, walls 1 px, glass twice as dense as the liquid, filled to
    h0 = fill·H with fill in [0.3, 0.6] per trajectory. The tipping angle θc (37°–39° here) is
    computed from the static balance (``glass_tipping_angle``); the liquid reaches the rim only
    later (so nothing spills while the glass is pushed). The push tilts the glass smoothly,
    θ(t) = θc (t / t_tip)^p, with t_tip in [0.35, 0.55]·(F - 1) and p in [0.8, 1.25]; past θc the
    glass falls freely about the corner, φ'' = λ² sin φ (φ = θ - θc, λ in [0.6, 0.9] per frame,
    starting at the push's angular speed), its corner slipping left by 0-3 px, and lands at
    90° about 4-7 frames later. Liquid over the rim spills; the puddle on the table spreads
    (time constant 6 frames) to a length ∝ √(spilled volume).

    ``critical``: frames from θc - ``critical_width`` until the glass lands — the unstable
    moment (balanced on its corner) and the fall, a state no stable video lingers in.
    ``state``: 0 standing (θ < θc), 1 tipped. ``critical_angle``: θc per trajectory.
    """
    T = _check_int(n_trajectories, "n_trajectories", 1)
    F = _check_int(n_frames, "n_frames", 16)
    size = _check_int(size, "size", 32)
    seed = _check_seed(seed)
    critical_width = _check_pos(critical_width, "critical_width")
    rng = np.random.default_rng(seed)
    k = size / 32.0
    W, H = 8.0 * k, 13.0 * k
    pivot = np.array([23.0 * k, 0.85 * size])
    fill = rng.uniform(0.3, 0.6, T)
    theta_c = np.array([glass_tipping_angle(H, W, f) for f in fill])
    t_tip = rng.uniform(0.35, 0.55, T) * (F - 1)
    p = rng.uniform(0.8, 1.25, T)
    lam = rng.uniform(0.6, 0.9, T)
    slide = rng.uniform(0.0, 3.0, T) * k                         # the corner slips left as it falls
    t = np.arange(F, dtype=np.float64)
    angle = np.empty((T, F))
    for i in range(T):
        push = t <= t_tip[i]
        angle[i, push] = theta_c[i] * (t[push] / t_tip[i]) ** p[i]
        # the fall: integrate φ'' = λ² sin φ from the tipping time (RK4, step 1/50 frame)
        phi, om = 0.0, np.radians(p[i] * theta_c[i] / t_tip[i])
        phi_land = np.radians(90.0 - theta_c[i])
        h, tt = 0.02, t_tip[i]
        f = lambda y: np.array([y[1], lam[i] ** 2 * np.sin(y[0])])
        y = np.array([phi, om])
        for j in np.flatnonzero(~push):
            while tt < t[j] and y[0] < phi_land:
                s = min(h, t[j] - tt)
                k1 = f(y); k2 = f(y + s / 2 * k1); k3 = f(y + s / 2 * k2); k4 = f(y + s * k3)
                y = y + s / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                tt += s
            tt = max(tt, t[j])
            angle[i, j] = 90.0 if y[0] >= phi_land else theta_c[i] + np.degrees(y[0])
    th = np.radians(angle)
    # liquid: the inner cavity (W - 2) × (H - 1) holds (W - 2)(h0 - 1); what is above its rim spills
    Wi, Hi = W - 2.0, H - 1.0
    area0 = Wi * (fill * H - 1.0)
    rim = np.where(Wi * np.tan(th) <= Hi, Wi * Hi - Wi * Wi * np.tan(th) / 2.0,
                   Hi * Hi / (2 * np.tan(np.maximum(th, 1e-9))))
    rim = np.where(angle >= 90.0, 0.0, rim)
    kept = np.minimum(area0[:, None], rim)
    spilled = area0[:, None] - kept
    # the cavity's corner is local (1, 1): its world height is sin θ + cos θ
    level = _liquid_level(th, Wi, Hi, kept) + np.sin(th) + np.cos(th)
    level = np.where(kept > 1e-9, level, -np.inf)
    # the puddle spreads after the spill begins
    t_spill = np.array([t[np.argmax(spilled[i] > 0)] if (spilled[i] > 0).any() else np.inf for i in range(T)])
    spread = 1.0 - np.exp(-np.clip(t[None, :] - t_spill[:, None] + 1.0, 0.0, None) / 6.0)
    puddle = 0.9 * np.sqrt(spilled) * spread                      # px; spilled is an area in px²
    landed = angle >= 90.0
    state = (angle >= theta_c[:, None]).astype(np.int64)
    critical = (angle >= theta_c[:, None] - critical_width) & ~landed
    shift = -slide[:, None] * np.clip((angle - theta_c[:, None]) / (90.0 - theta_c[:, None]), 0.0, 1.0)
    frames = _render_glass(th, level, puddle, W, H, pivot, size, shift=shift)
    return GlassScenes(frames, angle, theta_c, state, critical)


def critical_events(critical: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a (F,) bool array, as inclusive (start, end) frame pairs."""
    c = np.asarray(critical, dtype=bool).ravel()
    if c.size == 0:
        return []
    edges = np.flatnonzero(np.diff(np.r_[0, c.astype(np.int8), 0]))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def count_discs(frames: np.ndarray, *, min_area: int = 3) -> np.ndarray:
    """Visible discs (n,) int64 read off rendered occlusion frames (n, 1, S, S) or (n, S, S) in [0, 1].

    A rough pixel reading, for decoded or generated frames that have no ground truth: 1 for the
    occluder (when some pixel is above 0.8) plus the connected components (4-neighbour) of grey
    pixels (0.3–0.8) of at least ``min_area`` pixels, once the occluder's anti-aliased rim (the
    grey pixels touching a bright one) is removed.
    """
    from scipy import ndimage

    f = np.asarray(frames, dtype=np.float64)
    if f.ndim == 4:
        f = f[:, 0]
    if f.ndim != 3:
        raise ValueError(f"frames: expected (n, 1, S, S) or (n, S, S), got shape {np.shape(frames)}")
    out = np.zeros(len(f), dtype=np.int64)
    for i, img in enumerate(f):
        bright = img > 0.8
        grey = (img > 0.3) & (img <= 0.8) & ~ndimage.binary_dilation(bright, iterations=1)
        lab, k = ndimage.label(grey)
        areas = np.bincount(lab.ravel(), minlength=k + 1)[1:]
        out[i] = int(bright.any()) + int((areas >= min_area).sum())
    return out
