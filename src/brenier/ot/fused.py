"""The fused CPU kernel of the exact argmax / top-k: scores reduced in registers, never stored.

The tiled path (``brenier.ot.potential``) computes a cache-sized tile of scores with ``addmm``
and reduces it with ``amax``: every score is written to memory and read back. On this project's
2-core CPU that reduction, not the matmul, sets the pace: at N = 60,000, d = 16, top-4 ran at
~1.3 G pairs/s against ~2.9 for the matmul alone. Here one small C function
(``fused_topk.c``, GCC/Clang vector extensions) computes an 8 x 32 block of scores in vector
registers and compares it with each row's k-th best before anything is written: measured (float32,
no screen) 3.2 G pairs/s for argmax and 3.1 for top-4 on the 60,000 MNIST codes at d = 16, 1.3
at d = 64, the FMA units' peak here (``benchmarks/results/argmax_fused.json``).

KeOps was the library the issue named; it compiled here but ran at ~0.02 G pairs/s on CPU. No
wheel on PyPI ships a fused CPU (argmax of a matmul) kernel, so the kernel is compiled at first
use with the machine's C compiler (``$CC``, else ``cc``/``gcc``/``clang``), ``-O3
-march=native``, into a per-user cache (``$BRENIER_CACHE``, else ``$XDG_CACHE_HOME/brenier`` or
``~/.cache/brenier``), keyed by the source, the compiler, its flags and the CPU's feature flags;
it is written to a temporary name and renamed (atomic), and loaded with ``ctypes``, which
releases the GIL, so Python threads split the rows. Without a working compiler -- or with
``BRENIER_FUSED=0`` -- ``available()`` is False and ``search="auto"`` keeps the tiled path.

Exactness: every pair's score is h_n followed by d fused multiply-adds in the order q = 0..d-1,
whatever its place in a block (``addmm`` rounds a pair differently by its place); ties follow
the potential's rule. So the results equal the brute-force path's, up to float32 rounding at
near-ties (as between any two of the paths).

The bfloat16 screen (CPUs with AVX512-BF16, N >= SCREEN_MIN_TARGETS): every block is scored
first from bfloat16 copies of x and y, at twice the multiply-adds per instruction; a row rescores
a 32-target panel in float32, exactly as above, only when a screened score could still beat its
final k-th best -- within a rigorous bound of the bf16 rounding, and against a lower bound of that
k-th best which the screen itself provides, so the rescores wait until every panel is screened
(``fused_topk.c`` derives both). The answers are the float32 kernel's, bit for bit (tested); the
~0.1-1 % of pairs rescored for an argmax (a few % for a top-4) are counted as evaluations on top
of the M N screened ones. For targets near a lower-dimensional subspace (autoencoder codes) the
screen has two levels: a first one on the targets' leading principal axes, with a rigorous bound
of the rest, and the full-d screen only where the first cannot decide (``fused_topk.c``).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fused_topk.c")
#: above this k, a row's insertion into its sorted k-list costs more than the tiled path's merges
MAX_K = 64
#: bytes of target panels streamed per chunk: each chunk stays in L2 while every row meets it
CHUNK_BYTES = 512 * 2**10
#: screen the scores in bfloat16 where the CPU has AVX512-BF16 (exact: see fused_topk.c); the same
#: answers bit for bit, ~2-3x faster than the float32 kernel at N >= 10^4 (benchmarks/argmax.py)
SCREEN = True
#: ... from this many targets: below, the bound of the bf16 rounding lets too many panels through
#: to the exact rescore for the screen to pay. Measured (benchmarks/search_thresholds.py, JSON
#: benchmarks/results/search_thresholds.json: 20,000 samples, Gaussian targets, float32 / screen
#: time, d = 16 and 64): argmax 0.81-0.84 at N = 1,024, 0.86-1.35 at 2,048, 1.5-1.6 at 4,096;
#: top-4 0.92-0.94 at 4,096, 1.2-1.4 at 8,192.
SCREEN_MIN_TARGETS = 4096
_FLAGS = (["-O3", "-march=native", "-shared", "-fPIC"], ["-O3", "-shared", "-fPIC"])

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None


def _cache_dir() -> Path:
    root = os.environ.get("BRENIER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "brenier")
    return Path(root) / "kernels"


def _cpu_tag() -> str:
    """The CPU's feature flags (a -march=native build must not run on another CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return next((p for p in map(shutil.which, ("cc", "gcc", "clang")) if p), None)


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found ($CC, cc, gcc or clang)")
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{cc} --version failed: {exc}") from None
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = folder.stat()
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        # a library loaded from here runs as this user: nobody else may be able to plant one
        raise RuntimeError(f"kernel cache {folder} is not owned by this user or is writable by others "
                           f"(set BRENIER_CACHE to a private folder)")
    errors = []
    identity = [source, cc.encode(), version.encode(), _cpu_tag().encode()]
    for flags in _FLAGS:
        key = hashlib.sha256(b"\0".join([*identity, " ".join(flags).encode()])).hexdigest()[:20]
        lib = folder / f"fused_topk-{key}.so"
        error = None if lib.exists() else _compile(cc, flags, lib)
        if error is None:
            try:
                dll = ctypes.CDLL(str(lib))
            except OSError:  # a damaged cache entry (a full disk, a killed copy): build it again, once
                lib.unlink(missing_ok=True)
                error = _compile(cc, flags, lib)
                dll = ctypes.CDLL(str(lib)) if error is None else None
        if error is not None:
            errors.append(f"{' '.join(flags)}: {error}")
            continue
        dll.brenier_panel_width.restype = ctypes.c_int
        dll.brenier_topk_f32.restype = None
        dll.brenier_topk_f32.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p]
        dll.brenier_has_bf16.restype = ctypes.c_int
        dll.brenier_topk_bf16.restype = ctypes.c_int64
        dll.brenier_topk_bf16.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                          ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int32, ctypes.c_double,
                                          ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_double,
                                          ctypes.c_void_p, ctypes.c_void_p]
        return dll
    raise RuntimeError(f"compiling {SOURCE.name} with {cc} failed: " + " | ".join(errors))


def _compile(cc: str, flags: list[str], lib: Path) -> str | None:
    """Compile SOURCE into ``lib`` through a temporary file in its folder, renamed when complete
    (atomic: a reader sees no library or a whole one). The compiler's complaint, or None."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return done.stderr.strip()[-400:] or f"exit status {done.returncode}"
        os.replace(tmp, lib)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def library() -> ctypes.CDLL:
    """The compiled kernel (built at the first call, then cached); RuntimeError if unavailable."""
    global _lib, _error
    with _lock:
        if _lib is None and _error is None:
            if os.environ.get("BRENIER_FUSED", "1").strip().lower() in ("0", "false", "no", "off"):
                _error = "disabled by BRENIER_FUSED=0"
            else:
                try:
                    _lib = _build()
                except (RuntimeError, OSError) as exc:
                    _error = str(exc)
                    # not silent: the searches stay exact, but run the tiled path, ~2-3x slower
                    warnings.warn(f"brenier: the fused CPU kernel is unavailable ({_error}); the exact search runs "
                                  f"its PyTorch path instead (set BRENIER_FUSED=0 to choose that quietly)",
                                  RuntimeWarning, stacklevel=2)
        if _lib is None:
            raise RuntimeError(f"the fused CPU kernel is unavailable: {_error}")
        return _lib


def available() -> bool:
    """Whether the fused kernel can run here (compiles it on the first call)."""
    try:
        library()
    except RuntimeError:
        return False
    return True


def unavailable_reason() -> str | None:
    """Why ``available()`` is False (None when it is True)."""
    return None if available() else _error


def bf16_available() -> bool:
    """Whether the compiled kernel has the bfloat16 screen (AVX512-BF16 CPUs)."""
    return available() and bool(library().brenier_has_bf16())


#: the screen gets a first level in the targets' principal axes, on their first r coordinates, when
#: the rest of every target is this small against the largest target (|y_B| <= ROTATE_RESIDUAL
#: max |y|) and r leaves at least ROTATE_MIN_SAVING of the coordinates out. Autoencoder codes
#: qualify: the 60,000 MNIST codes at d = 64 have |y_B| <= 0.064 max |y| beyond r = 32 (99.9 % of
#: their second moment in 32 axes); the 16-d ones and Gaussian targets do not. Ad hoc (20,000
#: samples, those codes): r = 32 ran 1.3x / 1.5x the one-level screen for argmax at N = 10^4 /
#: 6 10^4, where r = 22-24 (|y_B| <= 0.12) gained 1.2x / 1.6x and r = 16 lost 1.6x at 10^4.
ROTATE_RESIDUAL = 0.07
ROTATE_MIN_SAVING = 0.375


def _principal_axes(y64: torch.Tensor) -> torch.Tensor:
    """(d, d) float64 orthonormal axes of the targets' second moment, largest first."""
    _, q = torch.linalg.eigh(y64.T @ y64)
    return q.flip(1).contiguous()


def _screen_rank(yr: torch.Tensor, ynorm: float) -> int:
    """The coordinates a first screen scores: the least even r < d whose remainder is small enough
    (see ROTATE_RESIDUAL), or d. yr (N, d): the targets in their principal axes; ynorm = max |y|."""
    n, d = yr.shape
    if n == 0 or d < 8:
        return d
    tail = yr.flip(1).square().cumsum(1).flip(1).sqrt()  # tail[:, r] = |y beyond its first r axes|
    limit = ROTATE_RESIDUAL * ynorm
    for r in range(2, int(d * (1 - ROTATE_MIN_SAVING)) + 1, 2):
        if float(tail[:, r].max()) <= limit:
            return r
    return d


def _round_up(v: torch.Tensor) -> torch.Tensor:
    """float64 -> float32, never below."""
    f = v.float()
    return torch.where(f.double() < v, torch.nextafter(f, torch.tensor(math.inf)), f)


class PackedTargets:
    """Targets y (N, d) in the kernel's panel layout, and their heights padded with -inf.

    ``ypack`` (ceil(N / P), d, P) float32 with P the kernel's panel width: one contiguous
    d x P block per P targets, streamed in order by the kernel; with ``screen`` (default
    ``SCREEN`` from SCREEN_MIN_TARGETS targets on, where the CPU has AVX512-BF16) also ``ybf``
    (ceil(N / P), ceil(d / 2), P, 2), the bfloat16 copy the screen scores from; and when the targets
    nearly lie in r < d principal axes (``rank``, by default chosen by ``_screen_rank``) the first
    level of a two-level screen: ``rot`` (d, d) to those axes, ``ybf_rot`` their first r coordinates
    in bf16 and ``ry`` (N padded) bounding each target's remainder. O(N d) memory, built once per
    target set; ``set_heights`` is O(N).
    """

    def __init__(self, targets: torch.Tensor, screen: bool | None = None, rank: int | None = None):
        self.width = library().brenier_panel_width()
        y = targets.detach().to(device="cpu", dtype=torch.float32)
        n, d = y.shape
        self.n, self.d = n, d
        self.panels = -(-n // self.width)
        pad = self.panels * self.width - n
        yt = torch.cat([y.T, y.new_zeros(d, pad)], 1)  # (d, panels * P)
        self.ypack = yt.view(d, self.panels, self.width).permute(1, 0, 2).contiguous()
        self.hpad = torch.full((self.panels * self.width,), -math.inf, dtype=torch.float32)
        self.hmax = 0.0
        self.chunk = max(1, CHUNK_BYTES // (4 * d * self.width))
        self.ybf = None
        self.rot = self.ry = self.ybf_rot = None
        if (SCREEN and n >= SCREEN_MIN_TARGETS if screen is None else screen) and bf16_available():
            y64 = y.double()
            ynorm = float(y64.norm(dim=1).max()) if n else 0.0
            self.ymax = ynorm * (1 + 1e-12)
            self.d2 = -(-d // 2)
            self.ybf, self.rymax = self._bf16_panels(y64)
            q = _principal_axes(y64)
            yr = y64 @ q  # the targets in their principal axes, computed once
            if rank is None:
                ra = _screen_rank(yr, ynorm)
            else:  # forced (tests, benchmarks): an even count in [2, d]
                ra = min(d, max(2, int(rank) + int(rank) % 2))
            self.ymax_a, self.rymax_a, self.rot_err, self.d2_rot = self.ymax, self.rymax, 0.0, self.d2
            if ra < d:  # a first screen in the frame of the targets' principal axes, on their first ra
                self.rot = q.float().contiguous()
                # rot_err (relative to |x| ymax): x' = x rot in float32 is within sqrt(d) (d + 1)
                # 2^-24 |x| of q^T x, and q is orthogonal up to |q q^T - I|
                orth = float(torch.linalg.matrix_norm(q @ q.T - torch.eye(d, dtype=torch.float64), ord=2))
                self.rot_err = 1.01 * (math.sqrt(d) * (d + 1) * 2.0**-24 + orth) + 1e-12
                self.ry = torch.zeros(self.panels * self.width, dtype=torch.float32)
                self.ry[:n] = _round_up(yr[:, ra:].norm(dim=1) * (1 + 1e-12))
                self.d2_rot = ra // 2
                self.ybf_rot, self.rymax_a = self._bf16_panels(yr[:, :ra])
                self.ymax_a = float(yr[:, :ra].norm(dim=1).max()) * (1 + 1e-12)

    def _bf16_panels(self, v: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(bf16 panels (panels, ceil(c / 2), P, 2), r): v (N, c) float64 in the screen's layout, and
        r >= every |v_n - bf16(v_n)| (float64 norms of exact differences, rounded up)."""
        n, c = v.shape
        c2 = -(-c // 2)
        vv = torch.zeros(self.panels * self.width, 2 * c2, dtype=torch.float64)
        vv[:n, :c] = v
        vb = vv.float().to(torch.bfloat16)
        r = float((vv[:n] - vb[:n].double()).norm(dim=1).max()) * (1 + 1e-12) if n else 0.0
        return vb.view(self.panels, self.width, c2, 2).permute(0, 2, 1, 3).contiguous(), r

    @property
    def screen_dim(self) -> int | None:
        """The coordinates the bf16 screen scores (d, or fewer in the targets' principal frame); None without it."""
        if self.ybf is None:
            return None
        return self.d if self.rot is None else 2 * self.d2_rot

    def set_heights(self, h: torch.Tensor) -> None:
        """h (N,): copied into the padded height vector (float32)."""
        self.hpad[: self.n] = h.detach().to(device="cpu", dtype=torch.float32)
        self.hmax = float(self.hpad[: self.n].abs().max()) if self.n else 0.0


def topk(x: torch.Tensor, packed: PackedTargets, k: int, threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(values (M, k) float32, indices (M, k) int64, rescored) of the k best scores <x, y_n> + h_n
    per row; ``rescored``: the pairs the bfloat16 screen scored again -- rescored in float32, or
    (two levels) by the full-d screen after the first -- (0 without the screen), i.e. score
    evaluations beyond the M N screened ones.

    x: (M, d) float32 CPU tensor; 1 <= k <= N. Rows are split over ``threads`` Python threads
    (default ``torch.get_num_threads()``); each row's answer does not depend on the split, nor on
    the screen (the same bits with and without).
    """
    lib = library()
    if not 1 <= k <= packed.n:
        raise ValueError(f"k must be in [1, N={packed.n}], got {k}")
    x = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
    m, d = x.shape
    if d != packed.d:
        raise ValueError(f"x must have shape (M, {packed.d}), got {tuple(x.shape)}")
    tv = torch.empty(m, k, dtype=torch.float32)
    ti = torch.empty(m, k, dtype=torch.int64)
    if m == 0:
        return tv, ti, 0
    threads = max(1, min(threads or torch.get_num_threads(), -(-m // 64)))
    cuts = [m * t // threads for t in range(threads + 1)]
    rot = packed.rot.data_ptr() if packed.rot is not None else None
    ry = packed.ry.data_ptr() if packed.ry is not None else None
    ybf_rot = packed.ybf_rot.data_ptr() if packed.ybf_rot is not None else None

    def run(t: int) -> int:
        a, b = cuts[t], cuts[t + 1]
        if b <= a:
            return 0
        if packed.ybf is None:
            lib.brenier_topk_f32(x[a].data_ptr(), b - a, d, packed.ypack.data_ptr(), packed.hpad.data_ptr(),
                                 packed.panels, packed.chunk, k, tv[a].data_ptr(), ti[a].data_ptr())
            return 0
        done = lib.brenier_topk_bf16(x[a].data_ptr(), b - a, d, rot, packed.d2_rot, ybf_rot, ry, packed.d2,
                                     packed.ybf.data_ptr(), packed.ypack.data_ptr(), packed.hpad.data_ptr(), packed.panels,
                                     packed.chunk, k, packed.ymax, packed.rymax, packed.ymax_a, packed.rymax_a,
                                     packed.rot_err, packed.hmax, tv[a].data_ptr(), ti[a].data_ptr())
        if done == -2:
            raise MemoryError("the fused kernel could not allocate its per-row screen state")
        if done < 0:
            raise RuntimeError("the fused kernel was built without AVX512-BF16")
        return done * packed.width

    if threads == 1:
        rescored = run(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            rescored = sum(pool.map(run, range(threads)))
    return tv, ti, rescored
