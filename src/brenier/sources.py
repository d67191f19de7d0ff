"""Source measures mu: the simple measures that the OT map pushes onto the data.

Each source knows its dimension, how to draw samples from it (pseudo-random, or randomised
quasi-Monte Carlo from a scrambled Sobol sequence where the measure allows it), how to test
membership, and a ball inside it (used to start the solvers with non-empty cells). 2-D sources
also expose themselves as a shapely polygon for the exact power-diagram solver.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import shapely
import torch

from ._array import as_points

__all__ = ["Source", "UniformBox", "UniformBall", "Polygon", "Gaussian", "source_from_dict", "CHUNK_SIZE", "n_chunks"]

# Sobol coordinates can be exactly 0; keep inverse-CDF transforms finite.
_U_EPS = 1e-7

#: Points per chunk of a Monte Carlo sample (``Source.chunks``). A sample of n points is the
#: chunks 0, 1, ..., ceil(n / CHUNK_SIZE) − 1 (the last one cut short), and a chunk's points depend
#: only on (seed, chunk index): any memory budget, any number of ranks sees the same sample.
CHUNK_SIZE = 1 << 14


def n_chunks(n: int) -> int:
    """Number of chunks of ``CHUNK_SIZE`` points holding a sample of ``n`` points."""
    return -(-int(n) // CHUNK_SIZE)


def _chunk_seed(seed: int, k: int) -> int:
    """A 63-bit seed for chunk ``k`` of the stream ``seed``, hashed by NumPy's SeedSequence so that
    no two (seed, k) pairs share a generator (seed * K + k would collide across streams)."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class _UnitCube:
    """A stream of points in the unit cube [0, 1)^k: scrambled Sobol when ``quasi``, else i.i.d.

    Successive ``draw`` calls continue the same sequence, so a large sample can be drawn in
    blocks without ever holding all of it.
    """

    def __init__(self, k: int, *, seed: int | None, quasi: bool):
        self.k = k
        seed = int(seed) if seed is not None else int(torch.seed() % 2**62)
        if quasi and k <= torch.quasirandom.SobolEngine.MAXDIM:
            self.sobol = torch.quasirandom.SobolEngine(k, scramble=True, seed=seed)
        else:
            self.sobol = None
            self.gen = torch.Generator(device="cpu")
            self.gen.manual_seed(seed)

    def draw(self, n: int, *, device, dtype) -> torch.Tensor:
        if self.sobol is not None:
            u = self.sobol.draw(n, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        else:
            u = torch.rand(n, self.k, generator=self.gen, dtype=dtype)
        return u.to(device)


class _ChunkedCube:
    """Chunks of the unit-cube stream: chunk k is the points [k·C, (k+1)·C) of one scrambled Sobol
    sequence (reached by ``fast_forward``, cheap next to scoring the points), or, i.i.d., C points
    from a generator seeded by (seed, k)."""

    def __init__(self, k: int, *, seed: int, quasi: bool):
        self.k, self.seed = k, int(seed)
        self.quasi = quasi and k <= torch.quasirandom.SobolEngine.MAXDIM
        self.sobol, self.pos = None, 0

    def chunk(self, index: int, dtype: torch.dtype) -> torch.Tensor:
        fdtype = torch.float64 if dtype == torch.float64 else torch.float32
        if not self.quasi:
            gen = torch.Generator(device="cpu").manual_seed(_chunk_seed(self.seed, index))
            return torch.rand(CHUNK_SIZE, self.k, generator=gen, dtype=fdtype)
        start = index * CHUNK_SIZE
        if self.sobol is None or start < self.pos:  # a chunk before the last one: restart the sequence
            self.sobol, self.pos = torch.quasirandom.SobolEngine(self.k, scramble=True, seed=self.seed), 0
        self.sobol.fast_forward(start - self.pos)
        self.pos = start + CHUNK_SIZE
        return self.sobol.draw(CHUNK_SIZE, dtype=fdtype)


def _uniform(n: int, k: int, *, seed: int | None, quasi: bool, device, dtype) -> torch.Tensor:
    """(n, k) points in the unit cube: scrambled Sobol when ``quasi``, else i.i.d. uniform."""
    return _UnitCube(k, seed=seed, quasi=quasi).draw(n, device=device, dtype=dtype)


def _normal_from_uniform(u: torch.Tensor) -> torch.Tensor:
    u = u.clamp(_U_EPS, 1 - _U_EPS)
    return math.sqrt(2.0) * torch.erfinv(2 * u - 1)


class Source:
    """Base class of source measures. Subclasses set ``dim`` and map unit-cube points with ``_from_unit``."""

    dim: int
    #: True when the measure is uniform on a region (cell masses are then volume fractions).
    uniform: bool = True

    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        quasi: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw ``n`` points from the measure: (n, dim) tensor on ``device``.

        With ``quasi=True`` the points come from a scrambled Sobol sequence seeded by ``seed``
        (randomised QMC: unbiased, and usually lower variance than i.i.d. points).
        """
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n: expected a non-negative integer, got {n!r}")
        return self._sample(int(n), seed=seed, quasi=quasi, device=device, dtype=dtype)

    def stream(
        self,
        n: int,
        block: int,
        *,
        seed: int | None = None,
        quasi: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        """Yield ``n`` points of the measure in blocks of at most ``block`` rows, (b, dim) each.

        Blocks continue one sequence (one Sobol stream when ``quasi``): together they are a
        sample of size ``n``, never held in memory at once.
        """
        cube = _UnitCube(self._cube_dim, seed=seed, quasi=quasi)
        done = 0
        while done < n:
            b = min(block, n - done)
            yield self._from_unit(cube.draw(b, device=device, dtype=dtype))
            done += b

    def chunks(
        self,
        n: int,
        *,
        seed: int,
        quasi: bool = False,
        indices: Iterable[int] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(k, x_k)`` for the chunks of a sample of ``n`` points: x_k (b, dim), b ≤ CHUNK_SIZE.

        The sample is chunks 0 .. n_chunks(n) − 1 of one stream, and chunk k's points depend
        only on ``(seed, k)`` (with ``quasi``, the points [k·C, (k+1)·C) of one scrambled Sobol
        sequence; else an i.i.d. draw seeded by (seed, k)); only the last chunk is cut short by n.
        So the sample does not depend on how it is split: ``indices`` (ascending) picks a subset
        of the chunks (e.g. ``range(rank, n_chunks(n), world_size)`` for one rank's share).
        """
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n: expected a non-negative integer, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        total = n_chunks(n)
        ks = range(total) if indices is None else [int(k) for k in indices]
        for k in ks:
            if not 0 <= k < total:
                raise ValueError(f"indices: chunk {k} outside 0..{total - 1} for a sample of {n} points")
        cube = _ChunkedCube(self._cube_dim, seed=int(seed), quasi=quasi)
        for k in ks:
            size = min(CHUNK_SIZE, int(n) - k * CHUNK_SIZE)
            yield k, self._chunk(cube, k, size, device=device, dtype=dtype)

    def _chunk(self, cube: _ChunkedCube, k: int, size: int, *, device, dtype) -> torch.Tensor:
        # always the whole chunk, then cut: a chunk's first points do not depend on n
        return self._from_unit(cube.chunk(k, dtype)[:size].to(device=device, dtype=dtype))

    #: dimension of the unit-cube points that ``_from_unit`` maps onto the measure
    _cube_dim: int

    def _sample(self, n, *, seed, quasi, device, dtype) -> torch.Tensor:
        return self._from_unit(_uniform(n, self._cube_dim, seed=seed, quasi=quasi, device=device, dtype=dtype))

    def _from_unit(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def contains(self, x) -> np.ndarray:
        """Boolean mask (M,) of the points of ``x`` (M, dim) inside the support."""
        raise NotImplementedError

    def inscribed_ball(self) -> tuple[np.ndarray, float]:
        """A ball (center (dim,), radius) inside the support: where the solvers start the cells."""
        raise NotImplementedError

    def as_polygon(self, resolution: int = 1024) -> shapely.Polygon | None:
        """The 2-D support as a shapely polygon (None when not 2-D or not a bounded uniform region)."""
        return None

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({args})"


def _check_dim(dim) -> int:
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim: expected a positive integer, got {dim!r}")
    return int(dim)


class UniformBox(Source):
    """Uniform measure on the box [low, high]^dim."""

    def __init__(self, dim: int, low: float = -1.0, high: float = 1.0):
        self.dim = _check_dim(dim)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"low, high: expected finite low < high, got {low!r}, {high!r}")
        self.low, self.high = float(low), float(high)

    @property
    def _cube_dim(self):
        return self.dim

    def _from_unit(self, u):
        return self.low + (self.high - self.low) * u

    def contains(self, x) -> np.ndarray:
        x = as_points(x, "x", dim=self.dim).numpy()
        return np.all((x >= self.low) & (x <= self.high), axis=1)

    def inscribed_ball(self):
        return np.full(self.dim, 0.5 * (self.low + self.high)), 0.5 * (self.high - self.low)

    def as_polygon(self, resolution: int = 1024):
        if self.dim != 2:
            return None
        return shapely.box(self.low, self.low, self.high, self.high)

    def to_dict(self):
        return {"kind": "UniformBox", "dim": self.dim, "low": self.low, "high": self.high}


class UniformBall(Source):
    """Uniform measure on the ball of ``radius`` around ``center`` (the origin by default).

    Sampling: a direction from ``dim`` normal coordinates, a radius ``r = R u^(1/dim)``; with
    ``quasi=True`` both come from one (dim + 1)-dimensional scrambled Sobol point.
    """

    def __init__(self, dim: int, radius: float = 1.0, center=None):
        self.dim = _check_dim(dim)
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius: expected a positive finite number, got {radius!r}")
        self.radius = float(radius)
        c = np.zeros(self.dim) if center is None else np.asarray(center, dtype=np.float64).reshape(-1)
        if c.shape != (self.dim,) or not np.all(np.isfinite(c)):
            raise ValueError(f"center: expected {self.dim} finite numbers, got {center!r}")
        self.center = c

    @property
    def _cube_dim(self):
        return self.dim + 1

    def _from_unit(self, u):
        g = _normal_from_uniform(u[:, : self.dim])
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        r = u[:, self.dim :].clamp_min(0) ** (1.0 / self.dim)
        c = torch.as_tensor(self.center, device=u.device, dtype=u.dtype)
        return c + self.radius * r * g

    def contains(self, x) -> np.ndarray:
        x = as_points(x, "x", dim=self.dim).numpy()
        return np.linalg.norm(x - self.center, axis=1) <= self.radius * (1 + 1e-12)

    def inscribed_ball(self):
        return self.center.copy(), self.radius

    def as_polygon(self, resolution: int = 1024):
        """A regular ``resolution``-gon inscribed in the disk (2-D only)."""
        if self.dim != 2:
            return None
        t = 2 * np.pi * np.arange(resolution) / resolution
        return shapely.Polygon(np.c_[self.center[0] + self.radius * np.cos(t), self.center[1] + self.radius * np.sin(t)])

    def to_dict(self):
        return {"kind": "UniformBall", "dim": self.dim, "radius": self.radius, "center": self.center.tolist()}


class Polygon(Source):
    """Uniform measure on a simple 2-D polygon, convex or not (holes allowed via a shapely input).

    ``vertices``: (K, 2) boundary vertices, or a shapely Polygon.
    """

    dim = 2

    def __init__(self, vertices):
        if isinstance(vertices, shapely.Polygon):
            poly = vertices
        else:
            v = np.asarray(vertices, dtype=np.float64)
            if v.ndim != 2 or v.shape[1] != 2 or v.shape[0] < 3:
                raise ValueError(f"vertices: expected shape (K, 2) with K >= 3, got {v.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError("vertices: contains NaN or infinite values")
            poly = shapely.Polygon(v)
        if not poly.is_valid or poly.area <= 0:
            raise ValueError(f"vertices: the polygon is not a valid simple polygon of positive area ({shapely.is_valid_reason(poly)})")
        self.polygon = shapely.normalize(poly)
        shapely.prepare(self.polygon)
        self.area = float(self.polygon.area)

    def _sample(self, n, *, seed, quasi, device, dtype):
        # Rejection from the bounding box: exact uniform law, QMC-friendly.
        x0, y0, x1, y1 = self.polygon.bounds
        frac = self.area / ((x1 - x0) * (y1 - y0))
        out, have, k = [], 0, 0
        while have < n:
            m = int(1.2 * (n - have) / frac) + 64
            s = None if seed is None else int(seed) * 7919 + k
            u = _uniform(m, 2, seed=s, quasi=quasi, device="cpu", dtype=torch.float64)
            p = torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], 1)
            keep = torch.from_numpy(shapely.contains_xy(self.polygon, p[:, 0].numpy(), p[:, 1].numpy()))
            out.append(p[keep])
            have += int(keep.sum())
            k += 1
        return torch.cat(out)[:n].to(device=device, dtype=dtype)

    def stream(self, n, block, *, seed=None, quasi=False, device="cpu", dtype=torch.float32):
        # Rejection sampling cannot continue one Sobol stream cheaply: seed each block apart.
        base = int(seed) if seed is not None else int(torch.seed() % 2**40)
        done, k = 0, 0
        while done < n:
            b = min(block, n - done)
            yield self._sample(b, seed=base * 1_000_003 + k, quasi=quasi, device=device, dtype=dtype)
            done, k = done + b, k + 1

    def _chunk(self, cube, k, size, *, device, dtype):
        # rejection sampling has no cheap fast-forward: each chunk is its own (seed, k) draw
        x = self._sample(CHUNK_SIZE, seed=_chunk_seed(cube.seed, k) % 2**40, quasi=cube.quasi, device=device, dtype=dtype)
        return x[:size]

    @property
    def _cube_dim(self):
        return 2

    def contains(self, x) -> np.ndarray:
        x = as_points(x, "x", dim=2).numpy()
        return shapely.intersects_xy(self.polygon, x[:, 0], x[:, 1])

    def inscribed_ball(self):
        # The segment from the pole of inaccessibility to the nearest boundary point.
        seg = shapely.maximum_inscribed_circle(self.polygon, tolerance=1e-3 * math.sqrt(self.area))
        (cx, cy), _ = shapely.get_coordinates(seg)
        return np.array([cx, cy]), float(seg.length)

    def as_polygon(self, resolution: int = 1024):
        return self.polygon

    def to_dict(self):
        return {"kind": "Polygon", "dim": 2, "wkt": self.polygon.wkt}


class Gaussian(Source):
    """Normal measure N(mean, std^2 I) in ``dim`` dimensions (QMC through the inverse CDF)."""

    uniform = False

    def __init__(self, dim: int, std: float = 1.0, mean=None):
        self.dim = _check_dim(dim)
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"std: expected a positive finite number, got {std!r}")
        self.std = float(std)
        m = np.zeros(self.dim) if mean is None else np.asarray(mean, dtype=np.float64).reshape(-1)
        if m.shape != (self.dim,) or not np.all(np.isfinite(m)):
            raise ValueError(f"mean: expected {self.dim} finite numbers, got {mean!r}")
        self.mean = m

    @property
    def _cube_dim(self):
        return self.dim

    def _from_unit(self, u):
        return torch.as_tensor(self.mean, device=u.device, dtype=u.dtype) + self.std * _normal_from_uniform(u)

    def contains(self, x) -> np.ndarray:
        x = as_points(x, "x", dim=self.dim).numpy()
        return np.ones(len(x), dtype=bool)

    def inscribed_ball(self):
        return self.mean.copy(), self.std

    def to_dict(self):
        return {"kind": "Gaussian", "dim": self.dim, "std": self.std, "mean": self.mean.tolist()}


def source_from_dict(d: dict[str, Any]) -> Source:
    """Inverse of ``Source.to_dict`` (used by save/load)."""
    kind = d.get("kind")
    if kind == "UniformBox":
        return UniformBox(d["dim"], d["low"], d["high"])
    if kind == "UniformBall":
        return UniformBall(d["dim"], d["radius"], d["center"])
    if kind == "Polygon":
        return Polygon(shapely.from_wkt(d["wkt"]))
    if kind == "Gaussian":
        return Gaussian(d["dim"], d["std"], d["mean"])
    raise ValueError(f"source: unknown kind {kind!r}")
