"""What the singular set separates: the classes on either side of its facets, and of its modes.

Given a ``SingularSet`` S of a fitted ``SemiDiscreteOT`` and a class label per target (e.g. the
digit of each MNIST code), these functions measure whether the tears of the Brenier map lie
*between* classes:

* ``facet_class_table``: among all adjacent pairs (power cells sharing a facet), the regular and
  the singular facets, the share whose two targets carry different labels, against the chance
  share 1 - sum_c p_c^2 of two random targets; the class pairs of the singular facets (C x C);
  how well the detour ratio alone tells a different-class facet (ROC AUC).
* ``mode_purity``: the modes (connected pieces of the regular facets) against the classes:
  purity, normalised mutual information, adjusted Rand index, number and size of the modes.
* ``rethreshold`` / ``kappa_sweep``: the same at other detour thresholds kappa, from the detours
  S already holds (no new path search): ``singular_set(threshold="auto")`` and
  ``method="exact"`` make every detour ratio exact up to ``KAPPA_MAX`` = 8.

If classes are separated by gaps in the space of the targets, singular facets join different
classes far more often than adjacent pairs do, and the modes are pure (NMI near 1). If the
classes touch, the singular facets' share is near that of all adjacent pairs and one mode holds
almost everything (NMI near 0). ``docs/singular_set.md`` reports both on MNIST codes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .singular import KAPPA_MAX, SingularSet, _attach_isolated, _components

__all__ = ["target_labels", "facet_class_table", "length_matched_share", "mode_purity", "rethreshold", "kappa_sweep"]


# ----------------------------------------------------------------------------- validation
def _check_set(S) -> SingularSet:
    if not isinstance(S, SingularSet):
        raise ValueError(f"S: expected a brenier.singular.SingularSet, got {type(S).__name__}")
    return S


def _check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    """(n,) int64 non-negative class labels."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(f"{name}: expected shape ({n},) (one label per target), got {lab.shape}")
    if lab.dtype == bool or not (np.issubdtype(lab.dtype, np.integer) or
                                 (np.issubdtype(lab.dtype, np.floating) and np.all(np.isfinite(lab))
                                  and np.all(lab == np.round(lab)))):
        raise ValueError(f"{name}: expected integer class labels, got dtype {lab.dtype}")
    lab = lab.astype(np.int64)
    if n and lab.min() < 0:
        raise ValueError(f"{name}: class labels must be >= 0, got {int(lab.min())}")
    return lab


def _check_kappa(kappa, name: str = "kappa") -> float:
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a number, got {type(kappa).__name__}")
    k = float(kappa)
    if not (1.0 < k <= KAPPA_MAX):
        raise ValueError(f"{name}: a detour threshold must lie in (1, {KAPPA_MAX:g}] (the detours are exact up to "
                         f"{KAPPA_MAX:g}), got {kappa!r}")
    return k


# ------------------------------------------------------------------------------- labels
def target_labels(ot, labels) -> np.ndarray:
    """(N_unique,) int64: the labels of ``ot.unique_targets_`` (the indices a ``SingularSet`` uses).

    labels : (N,) integer label of each of ``ot.targets_``. Targets merged as duplicates must
    carry the same label (ValueError otherwise).
    """
    inv = np.asarray(ot._inverse.cpu().numpy() if hasattr(ot._inverse, "cpu") else ot._inverse, dtype=np.int64)
    lab = _check_labels(labels, len(inv))
    m = int(inv.max()) + 1 if len(inv) else 0
    out = np.full(m, -1, dtype=np.int64)
    out[inv] = lab
    if np.any(out[inv] != lab):
        raise ValueError("labels: duplicate targets (merged into one) carry different labels")
    return out


# --------------------------------------------------------------------------- facet table
def _row(pairs: np.ndarray, lab: np.ndarray) -> dict:
    diff = lab[pairs[:, 0]] != lab[pairs[:, 1]] if len(pairs) else np.zeros(0, bool)
    n = int(len(pairs))
    return {"count": n, "different": int(diff.sum()), "share_different": float(diff.mean()) if n else math.nan}


def facet_class_table(S: SingularSet, labels, n_classes: int | None = None) -> dict:
    """The classes on either side of the facets of S.

    S : a ``SingularSet`` (E adjacent pairs over N targets); labels : (N,) int class of each
    (unique) target, values in [0, C); n_classes : C (default max label + 1).

    Returns a dict:
      "adjacent", "regular", "singular": {"count", "different", "share_different"} for all E
        adjacent pairs, the regular and the singular facets (share_different: the share whose
        two targets carry different labels; nan for no pair);
      "chance": 1 - sum_c p_c^2, the share of different-class pairs among two random targets;
      "enrichment": singular share_different / adjacent share_different (> 1: the tears prefer
        class boundaries);
      "singular_classes": (C, C) int64 list of lists, singular facets by class pair, each facet
        counted once at [min(a, b), max(a, b)] (diagonal: same class);
      "detour_auc": ROC AUC of the detour ratio (inf as the largest) as a score for "the two
        targets differ in class" over all adjacent pairs (0.5: the detour says nothing; nan
        when all pairs are of one kind);
      "length_auc": the same for the plain length |y_i - y_j| (the control: long facets join
        different classes more often whatever their detour);
      "regular_at_singular_lengths": the different-class share of the regular facets reweighted
        to the length distribution of the singular ones (``length_matched_share``): what the
        singular share would be if the detour told nothing beyond length.
    """
    _check_set(S)
    n = len(S.modes)
    lab = _check_labels(labels, n)
    c = int(lab.max()) + 1 if n else 0
    if n_classes is not None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < c:
            raise ValueError(f"n_classes: expected an integer >= max label + 1 = {c}, got {n_classes!r}")
        c = int(n_classes)
    adj = np.asarray(S.adjacency, dtype=np.int64).reshape(-1, 2)
    sing = np.asarray(S.singular, dtype=bool)
    p = np.bincount(lab, minlength=c) / max(n, 1)
    table = {"adjacent": _row(adj, lab), "regular": _row(adj[~sing], lab), "singular": _row(adj[sing], lab),
             "chance": float(1.0 - np.sum(p * p)), "n_targets": int(n), "n_classes": int(c)}
    a_sh, s_sh = table["adjacent"]["share_different"], table["singular"]["share_different"]
    table["enrichment"] = float(s_sh / a_sh) if a_sh and not math.isnan(s_sh) else math.nan
    conf = np.zeros((c, c), dtype=np.int64)
    f = adj[sing]
    if len(f):
        la, lb = lab[f[:, 0]], lab[f[:, 1]]
        np.add.at(conf, (np.minimum(la, lb), np.maximum(la, lb)), 1)
    table["singular_classes"] = conf.tolist()
    diff = lab[adj[:, 0]] != lab[adj[:, 1]] if len(adj) else np.zeros(0, bool)
    if diff.any() and not diff.all():
        from sklearn.metrics import roc_auc_score

        score = np.where(np.isfinite(S.detour), S.detour, np.nanmax(np.r_[S.detour[np.isfinite(S.detour)], 1.0]) * 2)
        table["detour_auc"] = float(roc_auc_score(diff, score))
        table["length_auc"] = float(roc_auc_score(diff, np.linalg.norm(S.targets[adj[:, 0]] - S.targets[adj[:, 1]], axis=1)))
    else:
        table["detour_auc"] = table["length_auc"] = math.nan
    table["regular_at_singular_lengths"] = length_matched_share(S, lab)
    return table


def length_matched_share(S: SingularSet, labels, bins: int = 20) -> float:
    """Different-class share of the regular facets of S, reweighted to the length distribution of
    its singular facets: the adjacent pairs are cut into ``bins`` quantile bins of length
    |y_i - y_j|; each bin's regular share is weighted by the bin's share of the singular facets
    (bins with singular facets but no regular one are left out, and the weights renormalised).
    labels : (N,) int class per target. nan when S has no singular or no regular facet.
    """
    _check_set(S)
    lab = _check_labels(labels, len(S.modes))
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    adj = np.asarray(S.adjacency, dtype=np.int64).reshape(-1, 2)
    sing = np.asarray(S.singular, dtype=bool)
    if not sing.any() or sing.all():
        return math.nan
    length = np.linalg.norm(S.targets[adj[:, 0]] - S.targets[adj[:, 1]], axis=1)
    edges = np.unique(np.quantile(length, np.linspace(0, 1, bins + 1)[1:-1]))
    b = np.searchsorted(edges, length, side="right")
    diff = (lab[adj[:, 0]] != lab[adj[:, 1]]).astype(np.float64)
    nb = len(edges) + 1
    n_reg = np.bincount(b[~sing], minlength=nb)
    d_reg = np.bincount(b[~sing], weights=diff[~sing], minlength=nb)
    w = np.bincount(b[sing], minlength=nb).astype(np.float64)
    w[n_reg == 0] = 0.0
    if w.sum() == 0:
        return math.nan
    return float(np.sum(w * d_reg / np.maximum(n_reg, 1)) / w.sum())


# ------------------------------------------------------------------------------- modes
def mode_purity(modes, labels) -> dict:
    """The modes against the classes.

    modes : (N,) int mode of each target (``SingularSet.modes``); labels : (N,) int class.
    Returns {"n_modes", "largest" (targets in the largest mode), "largest_share",
    "purity" (sum over modes of its most common class count, over N: 1 = every mode holds one
    class), "nmi" (normalised mutual information, arithmetic mean, sklearn), "ari" (adjusted
    Rand index), "n_pure_modes" (modes of one class only)}.
    """
    m = np.asarray(modes)
    if m.ndim != 1:
        raise ValueError(f"modes: expected a 1-D array (one mode per target), got shape {m.shape}")
    m = _check_labels(m, len(m), "modes")
    lab = _check_labels(labels, len(m))
    n = len(m)
    if n == 0:
        raise ValueError("modes: expected at least one target, got 0")
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    _, mi = np.unique(m, return_inverse=True)
    _, li = np.unique(lab, return_inverse=True)
    cont = np.zeros((mi.max() + 1, li.max() + 1), dtype=np.int64)
    np.add.at(cont, (mi, li), 1)
    sizes = cont.sum(axis=1)
    return {
        "n_modes": int(len(sizes)), "largest": int(sizes.max()), "largest_share": float(sizes.max() / n),
        "purity": float(cont.max(axis=1).sum() / n),
        "nmi": float(normalized_mutual_info_score(lab, m)), "ari": float(adjusted_rand_score(lab, m)),
        "n_pure_modes": int(np.sum((cont > 0).sum(axis=1) == 1)),
    }


# ----------------------------------------------------------------------------- thresholds
def rethreshold(S: SingularSet, kappa: float) -> SingularSet:
    """S at another detour threshold: singular = detour > kappa, modes recomputed.

    The labels are the exact test's at any kappa: where S's detours are known exactly only up to
    ``S.searched`` (a set from ``method="approx"``), the pairs whose side of kappa is unknown are
    searched to kappa first (on copies: S is not changed). Needs ``criterion="detour"``.
    """
    from .singular import hop_graph, refine_detours

    _check_set(S)
    if S.criterion != "detour":
        raise ValueError(f"S: rethreshold needs a detour-criterion singular set, got criterion={S.criterion!r}")
    k = _check_kappa(kappa)
    detour, searched = S.detour, S.searched
    if searched is not None and np.any((searched < k) & (detour > k)):
        detour, searched = detour.copy(), searched.copy()
        if S._graph is None:
            S._graph = hop_graph(S.targets)
        refine_detours(S.targets, S.adjacency, detour, searched, k, S._graph, labels_only=True)
    sing = detour > k
    modes = _attach_isolated(S.targets, S.adjacency, _components(len(S.modes), S.adjacency[~sing]))
    return dataclasses.replace(S, detour=detour, searched=searched, singular=sing, modes=modes, threshold=k)


def kappa_sweep(S: SingularSet, labels, kappas) -> list[dict]:
    """For each detour threshold in ``kappas`` (K,) (each in (1, 8]): the facet table (without its
    C x C class table) and the mode purity of ``rethreshold(S, kappa)``; a list of K dicts with
    "kappa", "n_facets", "adjacent"/"regular"/"singular", "enrichment", and the keys of
    ``mode_purity``."""
    _check_set(S)
    lab = _check_labels(labels, len(S.modes))
    ks = np.atleast_1d(np.asarray(kappas, dtype=object))
    if ks.ndim != 1 or len(ks) == 0:
        raise ValueError(f"kappas: expected a non-empty 1-D sequence of thresholds, got {kappas!r}")
    out = []
    for k in ks:
        k = _check_kappa(k, "kappas")
        Sk = rethreshold(S, k)
        t = facet_class_table(Sk, lab)
        row = {"kappa": k, "n_facets": Sk.n_facets}
        row.update({key: t[key] for key in ("adjacent", "regular", "singular", "enrichment", "chance")})
        row.update(mode_purity(Sk.modes, lab))
        out.append(row)
    return out
