"""Critical frames of a process: where its latent path leaves a stable state.

A model fitted on the *stable* states of a process (frames where nothing is about to change) sees
the data manifold as a union of modes — one per stable state — separated by gaps where the
critical configurations would lie (discs partly overlapping, liquid at the rim). A held-out
trajectory that goes from one stable state to another must cross such a gap: in the source
domain of the OT map that is a crossing of the singular set (``brenier.singular``), in the latent
space it is a change of mode and a stretch of path far from every training code.

``critical_frames(model, frames)`` encodes the frames (F, C, H, W), normalises the codes as the
model does (``model.normalise``: the OT targets live in the unit ball) and reads, per frame t:

* ``mode[t]``: the mode of the nearest training code — with ``modes="singular"``
  (``SingularSet.mode_of``) the connected components of the regular facets of the power diagram;
  with ``modes="graph"`` (``latent_modes``) the components of the ε-graph on the codes,
  ε = ``link`` × their median nearest-neighbour distance, components under 1 % of the codes
  merged into their nearest large one; with ``modes="none"`` one mode (no crossings: the score
  alone). ``"auto"`` takes the singular set's modes when they are trustworthy
  (``SingularSet.trusted``: more than one mode, each of at least k = max(16, 2d) codes, and no
  mode boundary through a connected piece of the data graph, i.e. not an accident of the sampled
  adjacency); else the graph's when the codes fall apart at all (``has_gap``: their kNN graph
  has two components of >= 5 % of the codes each, or ``brenier.singular.gap_pieces`` finds a
  persistent gap); else none — without a gap the ε-graph's components are cuts through one
  connected sheet of codes, and its "crossings" are false alarms (on the tilting glass: 15
  components, and 75 % of the frames their crossings report lie more than 2 frames from a
  critical one). On the occlusion codes (d = 8) the singular set finds 6 modes of purity 1.000
  for the visible count, the same for every adjacency seed, and "auto" uses them: see
  ``docs/manifold.md``.
* ``score[t]``, with ``scale="local"`` (the default), the distance from the frame's code y_t to
  the nearest distinct training code, in units of the local k-NN radius of the training codes
  around it (k = 8: on the validation trajectories of both processes k = 4 and 8 did equally
  well, k = 1, 2 and 16, 32 worse)::

      score(y) = |y - c_(1)(y)| / ( (1/k) Σ_{j ∈ N_k(y)} ρ_k(c_j) )

  where c_(1)(y) is the nearest training code, N_k(y) the k nearest training codes, and
  ρ_k(c) the distance from the code c to its k-th nearest other training code (duplicate codes
  counted once, ``local_scale``). A frame whose code lies farther from the stable codes than
  their own k-NN radius there (score > 1, the default threshold) is off the stable manifold.
  The unit adapts to the sampling density, as in the local outlier factor (Breunig et al.,
  SIGMOD 2000): where the stable states form a sheet sampled by a few trajectories (the glass:
  fill level × angle) a held-out stable frame lies far from every training code in absolute
  terms, but not compared with the spacing of the codes around it. With ``scale="global"`` (the
  old definition, default threshold 3) the unit is one number for all codes, r, the median
  leave-one-out nearest-neighbour distance of the training codes: ``score(y) = |y - c_(1)(y)| / r``.
  A stable held-out frame scores about 1 (global) or about 0.2-0.4 (local); a frame in a gap
  between modes more.

A frame is reported critical when its mode differs from the previous frame's (a *crossing*; the
frame of the pair with the larger score is reported) or when its score exceeds ``threshold``.

The simple alternative (``step_size_frames``) flags frames whose latent step |y_t - y_(t-1)| is
large compared with the path's median step: it assumes that a critical event is a jump.

``match_events`` scores detections against ground truth with a tolerance of ±``tol`` frames:
precision is the share of detected frames within ``tol`` of a critical frame, recall the share
of critical *events* (maximal runs of critical frames) with a detection within ``tol`` of the run.

References: An, Lei, Su, Gu et al., AE-OT (ICLR 2020) for the singular set as the boundary of the
data manifold; Lei, Su, Cui, Yau, Gu (CAGD 2019) for critical states as singular-set crossings;
Breunig, Kriegel, Ng, Sander, LOF (SIGMOD 2000) for a density-adaptive distance score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["critical_frames", "critical_codes", "critical_scores", "local_scale", "CriticalFrames", "step_size_frames",
           "match_events", "latent_modes", "mode_of", "has_gap", "MODE_RULES", "SCALES"]

MODE_RULES = ("auto", "singular", "graph", "none")
SCALES = ("local", "global")
DEFAULT_THRESHOLD = 3.0          # the global score's default threshold
DEFAULT_LOCAL_THRESHOLD = 1.0    # the local score's default threshold
DEFAULT_K = 8
GAP_MIN_SHARE = 0.05             # has_gap: the smallest share of the codes a separate piece must hold
DEFAULT_LINK = 3.0
DEFAULT_MIN_SHARE = 0.01


@dataclass
class CriticalFrames:
    """Result of ``critical_frames``.

    indices : (K,) int64 frames reported critical, increasing.
    score : (F,) float64 distance of each frame's code from the training codes, in units of their
        local k-NN radius (``scale="local"``) or of their median nearest-neighbour distance ("global").
    mode : (F,) int64 mode of each frame (the mode of its nearest training code).
    crossings : (C,) int64 frames t whose mode differs from frame t - 1's.
    step : (F,) float64 latent step |y_t - y_(t-1)| (step[0] = step[1]), normalised codes.
    codes : (F, d) float64 normalised codes y_t of the frames.
    threshold : the score threshold used; modes_from : "singular", "graph" or "none" (one mode);
    scale : the score's unit, "local" or "global".
    """

    indices: np.ndarray
    score: np.ndarray
    mode: np.ndarray
    crossings: np.ndarray
    step: np.ndarray
    codes: np.ndarray
    threshold: float
    modes_from: str
    scale: str = "local"


def _frames(frames: Any, name: str = "frames") -> np.ndarray:
    """(F, C, H, W) float32 from an array (F, C, H, W) / (F, H, W) or a sequence of frames of one size."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, (list, tuple)):
        shapes = []
        for i, f in enumerate(frames):
            a = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
            shapes.append(a.shape)
        if len(set(shapes)) > 1:
            first = shapes[0]
            bad = next(i for i, s in enumerate(shapes) if s != first)
            raise ValueError(f"{name}: all frames must have the same size; frame 0 is {first}, frame {bad} is {shapes[bad]}")
        frames = np.stack([f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f) for f in frames]) if frames else np.empty((0,))
    a = np.asarray(frames)
    if a.dtype == object:
        raise ValueError(f"{name}: all frames must have the same size (got a ragged array)")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}")
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"{name}: expected frames of shape (F, C, H, W) or (F, H, W), got shape {a.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"{name}: a trajectory needs at least 2 frames, got {a.shape[0]}")
    return a.astype(np.float32)


def _latent_dim(model) -> int:
    d = getattr(model, "latent_dim", None)
    if d is None:
        d = np.asarray(model.codes_).shape[1]
    return int(d)


def _check_model(model) -> None:
    for attr in ("encode", "normalise", "codes_"):
        if not hasattr(model, attr):
            raise TypeError(f"model: expected a fitted brenier.pipeline.AEOT (encode, normalise, codes_), got {type(model).__name__}")


def _nn_dist(q: torch.Tensor, y: torch.Tensor, exclude_self: bool = False, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Distance (M,) and index (M,) of the nearest row of y to each row of q, in blocks."""
    ds, ix = [], []
    for a in range(0, len(q), block):
        d = torch.cdist(q[a:a + block], y)
        if exclude_self:
            d[torch.arange(d.shape[0]), torch.arange(a, a + d.shape[0])] = float("inf")
        v, i = d.min(dim=1)
        ds.append(v)
        ix.append(i)
    return torch.cat(ds).numpy(), torch.cat(ix).numpy()


def _knn(q: torch.Tensor, y: torch.Tensor, k: int, exclude_self: bool = False, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Distances (M, k) and indices (M, k) of the k nearest rows of y to each row of q, nearest first, in blocks."""
    ds, ix = [], []
    for a in range(0, len(q), block):
        d = torch.cdist(q[a:a + block], y)
        if exclude_self:
            d[torch.arange(d.shape[0]), torch.arange(a, a + d.shape[0])] = float("inf")
        v, i = torch.topk(d, k, dim=1, largest=False)
        ds.append(v)
        ix.append(i)
    return torch.cat(ds).numpy(), torch.cat(ix).numpy()


def local_scale(codes: Any, k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
    """(distinct codes (U, d), rho (U,)): the distinct rows of ``codes`` (N, d) and each one's distance
    to its k-th nearest other distinct code (its local k-NN radius); duplicates count once, so a
    repeated code does not shrink the radius of its neighbourhood to 0."""
    y = np.asarray(codes, dtype=np.float64)
    if y.ndim != 2 or len(y) < 2:
        raise ValueError(f"codes: expected an array (N, d) with N >= 2, got shape {y.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    u = np.unique(y, axis=0)
    if len(u) < 2:
        raise ValueError("codes: all training codes are equal; a local scale needs at least 2 distinct codes")
    k = min(int(k), len(u) - 1)
    ut = torch.as_tensor(u)
    rho = _knn(ut, ut, k, exclude_self=True)[0][:, -1]
    return u, np.maximum(rho, 1e-300)


def latent_modes(codes: Any, link: float = DEFAULT_LINK, min_share: float = DEFAULT_MIN_SHARE) -> np.ndarray:
    """(N,) int64 mode labels of ``codes`` (N, d), numbered by decreasing size.

    The connected components of the ε-graph, ε = ``link`` × the median nearest-neighbour
    distance; components holding less than ``min_share`` of the codes are sampling accidents (a
    sparse patch of a mode, not a stable state) and join the mode of their nearest code in a
    large component.
    """
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import NearestNeighbors

    y = np.asarray(codes, dtype=np.float64)
    if y.ndim != 2 or len(y) < 2:
        raise ValueError(f"codes: expected an array (N, d) with N >= 2, got shape {y.shape}")
    if isinstance(link, bool) or not isinstance(link, (int, float)) or not np.isfinite(link) or link <= 0:
        raise ValueError(f"link: expected a positive number, got {link!r}")
    nn = NearestNeighbors(n_neighbors=2).fit(y)
    r = float(np.median(nn.kneighbors(y)[0][:, 1]))
    graph = nn.radius_neighbors_graph(y, link * max(r, 1e-300))
    _, lab = connected_components(graph, directed=False)
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0 <= min_share < 1:
        raise ValueError(f"min_share: expected a number in [0, 1), got {min_share!r}")
    big = np.isin(lab, np.flatnonzero(np.bincount(lab) >= min_share * len(lab)))
    if big.any() and not big.all():
        near = NearestNeighbors(n_neighbors=1).fit(y[big]).kneighbors(y[~big])[1][:, 0]
        lab[~big] = lab[big][near]
    _, lab = np.unique(lab, return_inverse=True)
    order = np.argsort(-np.bincount(lab), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[lab].astype(np.int64)


def _cached(model, attr: str, key: Any, compute) -> Any:
    """``compute()``, kept on the model under ``attr`` and reused while ``key`` (what it depends
    on: the codes' identity and size, the parameters) stays the same."""
    cache = getattr(model, attr, None)
    if cache is None or cache[0] != key:
        cache = (key, compute())
        try:
            setattr(model, attr, cache)
        except AttributeError:  # pragma: no cover - a frozen model object
            pass
    return cache[1]


def has_gap(model) -> bool:
    """Whether the training codes fall apart into separate pieces at all: their kNN graph
    (k = max(16, 2d), ``brenier.singular.knn_hop_graph``) has two components of >= k codes and
    >= 5 % of the codes each (smaller islands are tight clusters of near-identical frames, not
    stable states: on the tilting glass, 4 islands of 10-31 of its 1 634 distinct codes, frames
    at 56.6-60° where the puddle has left the picture), or a persistent gap (``brenier.singular.gap_pieces``: a merge in the single-linkage hierarchy of the
    graph at least twice as persistent as the next one). Cached on the model."""
    from scipy.sparse.csgraph import connected_components

    from .singular import gap_pieces, hop_k, knn_hop_graph

    def compute() -> bool:
        y = np.unique(np.asarray(model.codes_, dtype=np.float64), axis=0)
        if len(y) <= 2:
            return False
        g = knn_hop_graph(y)
        # pieces the kNN graph does not even join, each of >= k codes and >= 5 % of them, or joined
        # only across a persistent gap
        _, lab = connected_components(g, directed=False)
        return int((np.bincount(lab) >= max(hop_k(y.shape[1]), GAP_MIN_SHARE * len(y))).sum()) > 1 or \
            int(np.unique(gap_pieces(y, g)[0]).size) > 1

    return bool(_cached(model, "_critical_has_gap", (id(model.codes_), len(model.codes_)), compute))


def mode_of(model, y: Any, *, modes: str = "auto", link: float = DEFAULT_LINK, nearest: Any = None) -> tuple[np.ndarray, str]:
    """Mode labels (M,) int64 of normalised codes y (M, d) and the rule used ("singular", "graph" or "none").

    The mode of a point is the mode of its nearest training code (``model.codes_``); see
    ``critical_frames`` for the rules. ``nearest``: the indices of those codes, if known.
    """
    if modes not in MODE_RULES:
        raise ValueError(f"modes: expected one of {', '.join(MODE_RULES)}, got {modes!r}")
    S = getattr(model, "singular_set_", None)
    if modes == "singular" or (modes == "auto" and S is not None and bool(getattr(S, "trusted", int(S.n_modes) > 1))):
        if S is None:
            raise ValueError("modes: 'singular' needs a model with a singular set (model.singular_set_)")
        return np.asarray(S.mode_of(np.asarray(y, dtype=np.float64)), dtype=np.int64), "singular"
    if modes == "none" or (modes == "auto" and not has_gap(model)):
        return np.zeros(len(np.asarray(y)), dtype=np.int64), "none"
    targets = torch.as_tensor(np.asarray(model.codes_), dtype=torch.float64)
    labels = _cached(model, "_critical_graph_modes", (link, id(model.codes_), len(targets)),
                     lambda: latent_modes(targets.numpy(), link))
    if nearest is None:
        nearest = _nn_dist(torch.as_tensor(np.asarray(y, dtype=np.float64)), targets)[1]
    return labels[np.asarray(nearest)], "graph"


def _score_scale(model, scale: str, k: int) -> Any:
    """The per-model reference of the score, computed once and cached on the model: r (global) or
    (distinct codes (U, d) as a tensor, rho (U,)) (local)."""
    targets = np.asarray(model.codes_)

    def compute() -> Any:
        if scale == "global":  # the median leave-one-out neighbour distance of the codes
            t = torch.as_tensor(targets, dtype=torch.float64)
            return max(float(np.median(_nn_dist(t, t, exclude_self=True)[0])), 1e-300)
        u, rho = local_scale(targets, k)
        return torch.as_tensor(u), rho

    return _cached(model, "_critical_scale", (scale, k, id(model.codes_), len(targets)), compute)


def critical_scores(model, y: Any, *, scale: str = "local", k: int = DEFAULT_K) -> np.ndarray:
    """Scores (M,) of normalised codes y (M, d) against the model's training codes (see the module docstring)."""
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64))
    ref = _score_scale(model, scale, int(k))
    if scale == "global":
        return _nn_dist(yt, torch.as_tensor(np.asarray(model.codes_), dtype=torch.float64))[0] / ref
    u, rho = ref
    dist, idx = _knn(yt, u, min(int(k), len(u) - 1))
    return dist[:, 0] / rho[idx].mean(axis=1)


def critical_codes(model, z: Any, *, threshold: float | None = None, modes: str = "auto",
                   link: float = DEFAULT_LINK, scale: str = "local", k: int = DEFAULT_K) -> CriticalFrames:
    """``critical_frames`` on latent codes z (F, d) of a trajectory (not normalised: ``model.encode``'s output)."""
    _check_model(model)
    d = _latent_dim(model)
    zt = torch.as_tensor(np.asarray(z.detach().cpu() if isinstance(z, torch.Tensor) else z, dtype=np.float64))
    if zt.ndim != 2:
        raise ValueError(f"z: expected latent codes of shape (F, d), got shape {tuple(zt.shape)}")
    if zt.shape[1] != d:
        raise ValueError(f"z: latent dimension mismatch: the model's codes have dimension {d}, the path has {zt.shape[1]} "
                         "(was the model fitted on other data?)")
    if zt.shape[0] < 2:
        raise ValueError(f"z: a trajectory needs at least 2 frames, got {zt.shape[0]}")
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    if threshold is None:
        threshold = DEFAULT_LOCAL_THRESHOLD if scale == "local" else DEFAULT_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold: expected a positive number, got {threshold!r}")
    if modes not in MODE_RULES:
        raise ValueError(f"modes: expected one of {', '.join(MODE_RULES)}, got {modes!r}")

    y = torch.as_tensor(np.asarray(model.normalise(zt.numpy())), dtype=torch.float64)
    targets = torch.as_tensor(np.asarray(model.codes_), dtype=torch.float64)
    score = critical_scores(model, y.numpy(), scale=scale, k=k)
    near = _nn_dist(y, targets)[1]

    mode, modes_from = mode_of(model, y.numpy(), modes=modes, link=link, nearest=near)

    cross = np.flatnonzero(mode[1:] != mode[:-1]) + 1
    picked = {int(t if score[t] >= score[t - 1] else t - 1) for t in cross}
    picked |= {int(t) for t in np.flatnonzero(score > threshold)}
    step = np.linalg.norm(np.diff(y.numpy(), axis=0), axis=1)
    step = np.r_[step[:1], step]
    return CriticalFrames(np.asarray(sorted(picked), dtype=np.int64), score, mode, cross.astype(np.int64), step,
                          y.numpy(), float(threshold), modes_from, scale)


def critical_frames(model, frames: Any, *, threshold: float | None = None, modes: str = "auto",
                    link: float = DEFAULT_LINK, scale: str = "local", k: int = DEFAULT_K) -> CriticalFrames:
    """Critical frames of a trajectory ``frames`` (F, C, H, W) (or (F, H, W), or a list of frames of one size).

    ``model``: a fitted ``brenier.pipeline.AEOT`` (anything with ``encode``, ``normalise``,
    ``codes_`` and optionally ``singular_set_``), fitted on frames of the stable states.
    ``threshold``: score above which a frame is critical (see the module docstring); None: 1.0
    for ``scale="local"``, 3.0 for ``scale="global"``.
    ``modes``: "singular" (the singular set's modes), "graph" (ε-graph components of the codes,
    ε = ``link`` × median nearest-neighbour distance, see ``latent_modes``), "none" (one mode: the
    score alone), or "auto" (the singular set when the model has one whose modes are
    trustworthy, ``SingularSet.trusted``; else "graph" when the codes have a persistent gap,
    ``has_gap``; else "none").
    ``scale``: "local" (distance in units of the local k-NN radius of the codes, ``k`` nearest)
    or "global" (in units of their median nearest-neighbour distance).
    Returns a ``CriticalFrames`` with the indices and a score per frame.
    """
    _check_model(model)
    x = _frames(frames)
    shape = getattr(model, "image_shape_", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"frames: the model was fitted on images of shape {tuple(shape)}, got frames of shape {tuple(x.shape[1:])}")
    return critical_codes(model, np.asarray(model.encode(x)), threshold=threshold, modes=modes, link=link, scale=scale, k=k)


def step_size_frames(codes: Any, threshold: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """The simple alternative: frames whose latent step is large. codes (F, d), F >= 2.

    Returns (indices (K,), score (F,)) with score[t] = |y_t - y_(t-1)| / median step (score[0] =
    score[1]) and indices where score > ``threshold``.
    """
    y = np.asarray(codes, dtype=np.float64)
    if y.ndim != 2 or len(y) < 2:
        raise ValueError(f"codes: expected a path of shape (F, d) with F >= 2, got shape {y.shape}")
    s = np.linalg.norm(np.diff(y, axis=0), axis=1)
    s = np.r_[s[:1], s] / max(float(np.median(s)), 1e-300)
    return np.flatnonzero(s > threshold).astype(np.int64), s


def match_events(detected: Any, critical: Any, tol: int = 2) -> dict[str, float]:
    """Precision / recall of ``detected`` frame indices against a (F,) bool ground truth, ±``tol`` frames.

    Returns counts (tp, n_detected, events_hit, n_events) so that several trajectories can be
    pooled, plus precision and recall (1.0 when there is nothing to find / nothing was reported).
    """
    from .datasets.scenes import critical_events

    c = np.asarray(critical, dtype=bool).ravel()
    d = np.asarray(detected, dtype=np.int64).ravel()
    if isinstance(tol, bool) or not isinstance(tol, (int, np.integer)) or tol < 0:
        raise ValueError(f"tol: expected a non-negative integer, got {tol!r}")
    crit_idx = np.flatnonzero(c)
    tp = int(sum(bool(len(crit_idx)) and bool(np.any(np.abs(crit_idx - t) <= tol)) for t in d))
    events = critical_events(c)
    hit = int(sum(bool(np.any((d >= a - tol) & (d <= b + tol))) for a, b in events))
    return {"tp": tp, "n_detected": int(len(d)), "events_hit": hit, "n_events": len(events),
            "precision": tp / len(d) if len(d) else 1.0, "recall": hit / len(events) if events else 1.0}


# ------------------------------------------------------------------ figures
def plot_filmstrip(path, frames: Any, result: CriticalFrames, truth: Any = None, *, title: str = "") -> None:
    """PNG filmstrip of a trajectory (F, 1, H, W): detected critical frames framed in red, ground-truth
    critical frames (``truth`` (F,) bool) underlined in orange; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._io import atomic_write

    x = _frames(frames)
    F = len(x)
    cols = min(F, 16)
    rows = -(-F // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.05 * cols, 1.35 * rows + 0.6), squeeze=False)
    det = set(result.indices.tolist())
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= F:
            ax.axis("off")
            continue
        ax.imshow(x[k, 0], cmap="gray", vmin=0, vmax=1)
        hit = k in det
        for s in ax.spines.values():
            s.set_edgecolor("red" if hit else "0.7")
            s.set_linewidth(3 if hit else 0.5)
        gt = truth is not None and bool(np.asarray(truth)[k])
        ax.set_xlabel("truth: critical" if gt else "", fontsize=6, color="darkorange")
        ax.set_title(f"{k}" + (" ✱" if hit else ""), fontsize=8, color="red" if hit else "black")
    fig.suptitle(title or "trajectory — red frame: reported critical; orange label: ground truth", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot_scores(path, result: CriticalFrames, truth: Any = None, step_threshold: float | None = None, *, title: str = "") -> None:
    """PNG of the score along the path (with its threshold), the mode changes, the latent step size
    (the simple alternative, right axis) and the ground-truth critical frames (shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._io import atomic_write
    from .datasets.scenes import critical_events

    F = len(result.score)
    t = np.arange(F)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    if truth is not None:
        for i, (a, b) in enumerate(critical_events(np.asarray(truth, bool))):
            ax.axvspan(a - 0.5, b + 0.5, color="orange", alpha=0.25, label="ground truth: critical" if i == 0 else None)
    ax.plot(t, result.score, "o-", color="C0", ms=3, label="distance to the stable codes (score)")
    ax.axhline(result.threshold, color="C0", ls="--", lw=1, label=f"threshold {result.threshold:g}")
    for i, c in enumerate(result.crossings):
        ax.axvline(c - 0.5, color="C3", lw=1.2, label="mode change" if i == 0 else None)
    ax.plot(result.indices, result.score[result.indices], "x", color="red", ms=9, mew=2, label="reported critical")
    ax.set_xlabel("frame")
    ax.set_ylabel("score (× local k-NN radius)" if getattr(result, "scale", "local") == "local" else "score (× median neighbour distance)")
    ax2 = ax.twinx()
    s = result.step / max(float(np.median(result.step[1:])), 1e-300)
    ax2.plot(t, s, "s-", color="0.5", ms=2, lw=0.8, label="latent step / median (alternative)")
    if step_threshold is not None:
        ax2.axhline(step_threshold, color="0.5", ls=":", lw=1)
    ax2.set_ylabel("latent step / median", color="0.4")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", bbox_to_anchor=(1.09, 1.0), framealpha=0.9)
    ax.set_title(title or "critical-frame score along the path", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot_paths(path, rows: list[tuple[str, np.ndarray, list[str]]], *, title: str = "") -> None:
    """PNG with one strip of decoded frames per row: ``rows`` = [(label, frames (F, 1, H, W), per-frame captions)]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._io import atomic_write

    cols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(0.95 * cols, 1.45 * len(rows) + 0.5), squeeze=False)
    for i, (label, frames, caps) in enumerate(rows):
        for k in range(cols):
            ax = axes[i, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(frames):
                ax.axis("off")
                continue
            ax.imshow(np.asarray(frames)[k, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_title(caps[k], fontsize=7, color="red" if "!" in caps[k] else "black")
        axes[i, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
