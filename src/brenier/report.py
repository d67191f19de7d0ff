"""A run's evaluation, figures and self-contained HTML report.

``evaluate_run(model, X, y, out)`` generates images with a fitted ``AEOT`` (boundary "respect" and
"ignore"), scores them with a classifier trained on the real images (``brenier.evaluate``), finds
their nearest training images, draws the figures (PNG) and writes ``metrics.json``.
``build_report(run_dir)`` turns a run folder into ``report.html``: one file, every figure embedded
as a base64 PNG, no script, no external resource — it opens offline.

Sections of the report: 1. training curves (autoencoder losses, OT total-variation gap);
2. the latent codes in 2-D (PCA) coloured by mode of the singular set, beside the real labels;
3. 100 generated images with ``boundary="respect"`` beside 100 with ``boundary="ignore"``;
4. generated images above their nearest training image; 5. the metrics table. Other modules add
sections with ``build_report(run_dir, extra_sections=[Section(...)])``, or by dropping
``compare.md`` (+ the PNGs it links) in the run folder or in ``RUN/compare/``: it is shown as a "Comparison"
section (Markdown tables and paragraphs rendered; images referenced from it are embedded).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._io import atomic_write, write_json
from .figures import MAX_DRAWN, drawn_subset  # noqa: F401  (MAX_DRAWN: the bound the captions state)

__all__ = ["Section", "evaluate_run", "build_report", "save_grid", "FIGURES"]

#: the figures a run writes (file name → caption)
FIGURES = {
    "training_curves.png": "Training: autoencoder loss per epoch (left), OT total-variation gap per Newton iteration (right).",
    "latent_pca.png": "Latent codes (normalised) projected on their first two principal axes, coloured by mode of the singular set (left) and by the real label (right). At most 5,000 codes are drawn (a seeded uniform subset when there are more; the axes, mode labels and counts use every code).",
    "samples.png": "100 generated images. Left: boundary=\"respect\" (the OT extension never interpolates across the singular set). Right: boundary=\"ignore\". Red frames: the classifier's confidence is below the threshold (a blend of classes).",
    "neighbours.png": "Generated images (top row of each pair) and their nearest training image in pixel space (bottom row), with the Euclidean distance.",
}


@dataclass
class Section:
    """One report section: a title, an HTML body (trusted, made by the caller) and PNGs (embedded)."""

    title: str
    html: str = ""
    images: list[tuple[str | Path, str]] = field(default_factory=list)  # (png path, caption)


# ====================================================================== evaluation
def evaluate_run(
    model,
    X: np.ndarray,
    y: np.ndarray | None,
    out: str | Path,
    *,
    n_samples: int = 1000,
    seed: int = 0,
    data_name: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Sample, score, draw and write ``metrics.json`` + figures into ``out`` for a fitted AEOT.

    X: (n, C, H, W) the training images (float32 in [0, 1]); y: (n,) labels or None (then no
    classifier scores). Returns the metrics dict.
    """
    from .evaluate import classifier_scores, classify, nearest_neighbours, train_image_classifier

    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 100:
        raise ValueError(f"n_samples: expected an integer ≥ 100, got {n_samples!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda s: None)
    X = np.asarray(X, dtype=np.float32)
    t = time.perf_counter()
    timings: dict[str, float] = {}
    samples, codes = {}, {}
    for b in ("respect", "ignore"):
        imgs, c = model.sample(n_samples, seed=seed + 1, boundary=b, return_codes=True)
        samples[b], codes[b] = np.asarray(imgs, dtype=np.float32), np.asarray(c)
    timings["sample_s"] = time.perf_counter() - t
    say(f"sampled 2 × {n_samples} images in {timings['sample_s']:.1f} s")

    metrics: dict[str, Any] = {
        "data": data_name, "n_train": int(len(X)), "image_shape": list(model.image_shape_),
        "latent_dim": int(model.latent_dim), "seed": int(model.seed), "n_samples": int(n_samples),
        "autoencoder": {**model.train_info_, "val_mse": float(model.train_history_[model.train_info_["best_epoch"] - 1]["val_mse"])
                        if model.train_history_ else None, "params": int(sum(p.numel() for p in model.autoencoder_.parameters()))},
        "normalisation": {"rule": "y = (z - mean) / max_i ||z_i - mean||", "scale": float(model.scale_)},
        "ot": {"N": int(len(model.codes_)), "source": model.ot_.source_.to_dict(), "tv_error": _num(model.ot_.tv_error_),
               "iterations": int(model.ot_.n_iter_), "converged": bool(model.ot_.converged_), "time_s": float(model.ot_.fit_time_)},
        "timings_fit": {k: float(v) for k, v in model.timings_.items()},
    }
    ss = getattr(model, "singular_set_", None)
    if ss is not None:
        metrics["singular_set"] = {"n_modes": int(ss.n_modes), "n_facets": int(len(np.asarray(ss.facets)))}

    probs: dict[str, np.ndarray] = {}
    if y is not None:
        t = time.perf_counter()
        y = np.asarray(y)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(X))
        k = max(1, len(X) // 5)
        lim = min(len(X) - k, 10_000)  # the judge needs no more than 10k images
        clf = train_image_classifier(X[perm[k:k + lim]], y[perm[k:k + lim]], seed=seed)
        acc = float(np.mean(clf.predict(X[perm[:k]].reshape(k, -1)) == y[perm[:k]]))
        p_real = classify(clf, X[perm[:k]])
        classes = [str(c) for c in clf.classes_]
        metrics["classifier"] = {"kind": "sklearn MLPClassifier (128 hidden units)", "held_out_accuracy": acc,
                                 "held_out_confident_share": float(np.mean(p_real.max(axis=1) >= 0.9))}
        for b in samples:
            probs[b] = classify(clf, samples[b])
            metrics[b] = classifier_scores(probs[b], classes=classes)
        # the autoencoder's own reconstructions: the best any decoder output can score
        rec = np.asarray(model.decode(model.encode(X[perm[:k]])), dtype=np.float32)
        metrics["reconstructions"] = classifier_scores(classify(clf, rec), classes=classes)
        timings["classifier_s"] = time.perf_counter() - t
        say(f"classifier: held-out accuracy {acc:.3f}; confident share respect {metrics['respect']['confident_share']:.3f}, "
            f"ignore {metrics['ignore']['confident_share']:.3f}")
    else:
        for b in samples:
            metrics[b] = {"n": int(n_samples)}

    t = time.perf_counter()
    nn_idx, nn_dist = {}, {}
    for b in samples:
        nn_idx[b], nn_dist[b] = nearest_neighbours(samples[b], X)
        metrics[b]["nn_distance_median"] = float(np.median(nn_dist[b]))
        metrics[b]["nn_exact_copies"] = int(np.sum(nn_dist[b] < 1e-3))
    # reference: distance from held-out real images to the training images
    ref_i = model.val_index_ if len(getattr(model, "val_index_", [])) else np.arange(min(500, len(X)))
    ref_i = np.asarray(ref_i)[:1000]
    train_mask = np.ones(len(X), bool)
    train_mask[ref_i] = False
    _, d_ref = nearest_neighbours(X[ref_i], X[train_mask])
    metrics["real_heldout_nn_distance_median"] = float(np.median(d_ref))
    timings["neighbours_s"] = time.perf_counter() - t

    t = time.perf_counter()
    _fig_training(model, out / "training_curves.png")
    _fig_latent(model, X, y, out / "latent_pca.png", samples_codes=codes["respect"])
    _fig_samples(samples, probs, out / "samples.png", metrics)
    _fig_neighbours(samples["respect"], X, nn_idx["respect"], nn_dist["respect"], out / "neighbours.png")
    timings["figures_s"] = time.perf_counter() - t
    metrics["timings_eval"] = timings
    write_json(out / "metrics.json", _clean(metrics))
    return metrics


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _clean(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return _num(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


# ====================================================================== figures
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _plt()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _fig_training(model, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
    h = model.train_history_
    ep = [r["epoch"] for r in h]
    ax[0].plot(ep, [r["train_loss"] for r in h], label="train")
    ax[0].plot(ep, [r["val_loss"] for r in h], label="held-out")
    best = model.train_info_["best_epoch"]
    ax[0].axvline(best, color="grey", ls=":", lw=1, label=f"best epoch {best}")
    ax[0].set(xlabel="epoch", ylabel="binary cross-entropy per pixel", title="Autoencoder")
    ax[0].legend(frameon=False)
    oh = getattr(model.ot_, "history_", []) or []
    if oh:
        it = [r["iteration"] for r in oh]
        ax[1].semilogy(it, [max(r["tv_debiased"], 1e-5) for r in oh], "o-", ms=3, label="TV gap (debiased)")
        ax[1].semilogy(it, [max(r["noise_floor"], 1e-5) for r in oh], "--", color="grey", label="Monte Carlo noise floor")
        ax[1].axhline(model.ot_.tol_, color="C3", ls=":", lw=1, label=f"tolerance {model.ot_.tol_:g}")
        ax[1].legend(frameon=False)
    ax[1].set(xlabel="Newton iteration", ylabel="½ Σ|μ(W_i) − ν_i|", title=f"Semi-discrete OT (N = {len(model.codes_):,})")
    fig.tight_layout()
    _save(fig, path)


def _pca2(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = Z.mean(0)
    _, s, vt = np.linalg.svd(Z - m, full_matrices=False)
    return m, vt[:2], (s[:2] ** 2) / max((s ** 2).sum(), 1e-300)


def _fig_latent(model, X, y, path: Path, samples_codes: np.ndarray | None = None) -> None:
    plt = _plt()
    Z = np.asarray(model.codes_)
    m, V, ev = _pca2(Z)
    P = (Z - m) @ V.T
    modes = model.modes_
    labels = None if y is None else np.asarray(y)[np.asarray(getattr(model, "code_index_", np.arange(len(Z))))]
    panels = [("mode of the singular set", modes), ("real label", labels)]
    panels = [p for p in panels if p[1] is not None] or [("codes", np.zeros(len(Z), int))]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    s = 6 if len(Z) < 5000 else 2
    show = drawn_subset(len(Z), seed=int(getattr(model, "seed", 0) or 0))   # a scatter of 60,000 codes shows no more
    for ax, (title, c) in zip(axes[0], panels):
        c = np.asarray(c)
        k = int(c.max()) + 1 if len(c) else 1
        cmap = plt.get_cmap("tab10" if k <= 10 else "tab20" if k <= 20 else "nipy_spectral")
        ax.scatter(P[show, 0], P[show, 1], c=(c % cmap.N if k <= 20 else c)[show], cmap=cmap, s=s, lw=0, alpha=0.8,
                   vmin=0, vmax=(cmap.N - 1) if k <= 20 else max(k - 1, 1))
        if k <= 10:
            for j in range(k):
                sel = c == j
                if sel.sum():
                    ax.annotate(str(j), P[sel].mean(0), fontsize=12, weight="bold", ha="center", va="center",
                                bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0))
        noun = "mode" if title.startswith("mode") else "class"
        n_lab = f"{k} {noun}" if k == 1 else f"{k} {'modes' if noun == 'mode' else 'classes'}"
        ax.set(title=f"{title} ({n_lab})", xlabel=f"PC 1 ({100 * ev[0]:.0f} % var.)", ylabel=f"PC 2 ({100 * ev[1]:.0f} % var.)")
        ax.set_aspect("equal", adjustable="datalim")
    drawn = "" if len(show) == len(Z) else f"; {len(show):,} drawn"
    fig.suptitle(f"Normalised latent codes (N = {len(Z):,}, d = {Z.shape[1]}{drawn}), PCA", y=1.0)
    fig.tight_layout()
    _save(fig, path)


def _grid(imgs: np.ndarray, rows: int, cols: int, pad: int = 1) -> np.ndarray:
    """Tile images (n, C, H, W) into one array (rows·(H+pad)+pad, cols·(W+pad)+pad[, 3]); padding is white
    (0 for grayscale shown with gray_r, 1 for colour)."""
    n, c, h, w = imgs.shape
    fill = 0.0 if c < 3 else 1.0
    g = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3 if c >= 3 else 1), fill, dtype=np.float32)
    for k in range(min(n, rows * cols)):
        r, q = divmod(k, cols)
        im = imgs[k].transpose(1, 2, 0)[:, :, :3] if c >= 3 else imgs[k].transpose(1, 2, 0)
        g[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = im
    return g[:, :, 0] if g.shape[2] == 1 else g


def save_grid(imgs: np.ndarray, path: str | Path, *, cols: int | None = None) -> Path:
    """Write images (n, C, H, W) in [0, 1] as one PNG grid (dark strokes on white for grayscale), atomically."""
    a = np.asarray(imgs, dtype=np.float32)
    if a.ndim != 4 or a.shape[0] < 1:
        raise ValueError(f"imgs: expected images (n, C, H, W), got shape {a.shape}")
    n, c, h, w = a.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    g = _grid(np.clip(a, 0, 1), rows, cols)
    plt = _plt()
    px = max(2, min(8, 600 // max(g.shape[:2])))  # screen pixels per image pixel
    fig = plt.figure(figsize=(g.shape[1] * px / 100, g.shape[0] * px / 100))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(g, cmap="gray_r" if c < 3 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return Path(path)


def _fig_samples(samples: dict[str, np.ndarray], probs: dict[str, np.ndarray], path: Path, metrics: dict) -> None:
    plt = _plt()
    import matplotlib.patches as mpatches

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.9))
    for ax, b in zip(axes, ("respect", "ignore")):
        imgs = samples[b][:100]
        n, c, h, w = imgs.shape
        ax.imshow(_grid(imgs, 10, 10), cmap="gray_r" if c == 1 else None, vmin=0, vmax=1, interpolation="nearest")
        title = f'boundary="{b}"'
        if b in probs:
            conf = probs[b][:100].max(axis=1)
            for k in np.flatnonzero(conf < 0.9):
                r, q = divmod(int(k), 10)
                ax.add_patch(mpatches.Rectangle((q * (w + 1) + 0.5, r * (h + 1) + 0.5), w, h, fill=False, ec="red", lw=1.6))
            sc = metrics[b]
            title += f"\n{100 * sc['confident_share']:.1f} % confident (of {sc['n']}), class shares {100 * sc['min_class_share']:.1f}–{100 * sc['max_class_share']:.1f} %"
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def _fig_neighbours(samples: np.ndarray, X: np.ndarray, idx: np.ndarray, dist: np.ndarray, path: Path, k: int = 12) -> None:
    plt = _plt()
    c = samples.shape[1]
    fig, axes = plt.subplots(2, k, figsize=(1.05 * k, 2.6))
    for j in range(k):
        for r, (im, lab) in enumerate(((samples[j], "generated"), (X[idx[j]], f"d={dist[j]:.2f}"))):
            ax = axes[r, j]
            ax.imshow(im.transpose(1, 2, 0)[:, :, 0] if c == 1 else im.transpose(1, 2, 0)[:, :, :3], cmap="gray_r" if c == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(lab if r == 1 else "", fontsize=8)
        if j == 0:
            axes[0, 0].set_ylabel("generated", fontsize=8)
            axes[1, 0].set_ylabel("nearest\ntraining", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


# ====================================================================== HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#17803d;font-weight:600}.fail{color:#b42318;font-weight:600}
.muted{color:#666;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}
"""


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(path: Path, caption: str) -> str:
    return f"<figure>{_img_tag(path, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return '<span class="pass">yes</span>' if v else '<span class="fail">no</span>'
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _metrics_html(m: dict[str, Any]) -> str:
    rows: list[tuple[str, Any, Any]] = []
    has_clf = "classifier" in m
    if has_clf:
        rows += [
            ("images labelled with confidence ≥ 0.9 (bar ≥ 90 %)", m["respect"]["confident_share"], m["ignore"]["confident_share"]),
            ("mean classifier confidence", m["respect"]["mean_confidence"], m["ignore"]["mean_confidence"]),
            ("smallest class share (bar ≥ 5 %)", m["respect"]["min_class_share"], m["ignore"]["min_class_share"]),
            ("largest class share (bar ≤ 15 %)", m["respect"]["max_class_share"], m["ignore"]["max_class_share"]),
            ("passes the digits bar", m["respect"]["passes_bar"], m["ignore"]["passes_bar"]),
        ]
    rows += [
        ("median distance to nearest training image", m["respect"].get("nn_distance_median"), m["ignore"].get("nn_distance_median")),
        ("exact copies of a training image (distance < 0.001)", m["respect"].get("nn_exact_copies"), m["ignore"].get("nn_exact_copies")),
    ]
    t = ['<table><tr><th>generated images (n = %d)</th><th>boundary="respect"</th><th>boundary="ignore"</th></tr>' % m["n_samples"]]
    for name, a, b in rows:
        t.append(f"<tr><td>{html.escape(name)}</td><td class=num>{_fmt(a)}</td><td class=num>{_fmt(b)}</td></tr>")
    t.append("</table>")
    info = [
        ("data", f'{m.get("data") or "user data"}: {m["n_train"]:,} images of shape {tuple(m["image_shape"])}'),
        ("autoencoder", f'{m["autoencoder"]["kind"]}, {m["autoencoder"]["params"]:,} parameters, {m["autoencoder"]["epochs_run"]} epochs '
                        f'(best {m["autoencoder"]["best_epoch"]}), held-out BCE {m["autoencoder"]["best_val_loss"]:.4f}, '
                        f'MSE {m["autoencoder"]["val_mse"]:.4g}'),
        ("latent", f'd = {m["latent_dim"]}; normalised {m["normalisation"]["rule"]}'),
        ("OT", f'N = {m["ot"]["N"]:,} codes, source {m["ot"]["source"].get("kind", "")}, TV gap {_fmt(m["ot"]["tv_error"])} after '
               f'{m["ot"]["iterations"]} Newton iterations ({"converged" if m["ot"]["converged"] else "not converged"}), {m["ot"]["time_s"]:.1f} s'),
    ]
    if "singular_set" in m:
        info.append(("singular set", f'{m["singular_set"]["n_modes"]} modes, {m["singular_set"]["n_facets"]} singular facets'))
    if has_clf:
        c = m["classifier"]
        info.append(("judge", f'{c["kind"]} trained on 80 % of the real images (at most 10,000): held-out accuracy {c["held_out_accuracy"]:.3f}, '
                              f'confident (≥ 0.9) on {100 * c["held_out_confident_share"]:.1f} % of real held-out images'))
        if "reconstructions" in m:
            info.append(("reconstructions", f'autoencoder reconstructions of held-out images: {100 * m["reconstructions"]["confident_share"]:.1f} % confident'))
    info.append(("real held-out images", f'median distance to nearest training image {m["real_heldout_nn_distance_median"]:.3g}'))
    tf = m.get("timings_fit", {})
    te = m.get("timings_eval", {})
    info.append(("time", ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in {**tf, **te}.items())))
    t.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in info) + "</table>")
    if has_clf:
        cls = list(m["respect"]["class_shares"])
        t.append("<p class=muted>Share of each predicted class (%):</p><table><tr><th>class</th>" +
                 "".join(f"<th>{html.escape(c)}</th>" for c in cls) + "</tr>")
        for b in ("respect", "ignore"):
            t.append(f"<tr><td>{b}</td>" + "".join(f"<td class=num>{100 * m[b]['class_shares'][c]:.1f}</td>" for c in cls) + "</tr>")
        t.append("</table>")
    return "\n".join(t)


def _markdown(md: str, base: Path) -> str:
    """A small Markdown subset → HTML: headings, pipe tables, images (embedded), code spans, paragraphs."""
    out, para, lines = [], [], md.splitlines()

    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)

    def flush():
        if para:
            out.append("<p>" + inline(" ".join(para)) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        ln = lines[i].rstrip()
        img = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", ln.strip())
        if not ln.strip():
            flush()
        elif ln.startswith("#"):
            flush()
            level = min(len(ln) - len(ln.lstrip("#")) + 2, 6)
            out.append(f"<h{level}>{inline(ln.lstrip('#').strip())}</h{level}>")
        elif img:
            flush()
            p = (base / img.group(2)).resolve()
            if p.suffix.lower() == ".png" and p.is_file() and base.resolve() in p.parents:
                out.append(_figure(p, img.group(1)))
        elif ln.lstrip().startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            i -= 1
            t = ["<table>"]
            for k, r in enumerate(rows):
                tag = "th" if k == 0 else "td"
                t.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in r) + "</tr>")
            out.append("".join(t) + "</table>")
        else:
            para.append(ln.strip())
        i += 1
    flush()
    return "\n".join(out)


def build_report(run_dir: str | Path, *, extra_sections: list[Section] | None = None, out: str | Path | None = None,
                 title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``out``): one self-contained file, figures embedded as base64 PNG.

    Reads ``metrics.json`` and the PNGs of ``FIGURES`` from ``run_dir`` (a missing figure is
    skipped); adds a "Comparison" section from ``compare.md`` when present, then ``extra_sections``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: {run_dir} is not a folder")
    mfile = run_dir / "metrics.json"
    if not mfile.is_file():
        raise FileNotFoundError(f"run_dir: {run_dir} has no metrics.json (run `brenier fit` then `brenier report`, or `brenier demo`)")
    try:
        m = json.loads(mfile.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{mfile}: not valid JSON ({exc})") from None
    if extra_sections is not None and not all(isinstance(s, Section) for s in extra_sections):
        raise TypeError("extra_sections: expected a list of brenier.report.Section")
    heading = title or f"brenier AEOT run: {m.get('data') or run_dir.name}"
    body = [f"<h1>{html.escape(heading)}</h1>",
            f'<p class=muted>Generated {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} from <code>{html.escape(str(run_dir))}</code>. '
            "Autoencoder → normalised latent codes → semi-discrete OT from the uniform ball (Brenier potential) → "
            "piecewise-linear extension of the map that respects the singular set → decoder.</p>"]
    sections = [
        ("1. Training curves", ["training_curves.png"]),
        ("2. Latent codes and modes", ["latent_pca.png"]),
        ("3. Generated images: respecting vs ignoring the singular set", ["samples.png"]),
        ("4. Nearest training neighbours", ["neighbours.png"]),
    ]
    for name, figs in sections:
        present = [f for f in figs if (run_dir / f).is_file()]
        if present:
            body.append(f"<h2>{html.escape(name)}</h2>")
            body += [_figure(run_dir / f, FIGURES[f]) for f in present]
    body.append("<h2>5. Metrics</h2>")
    body.append(_metrics_html(m))
    for cdir in (run_dir, run_dir / "compare"):  # `brenier demo` writes its comparison to RUN/compare/
        if (cdir / "compare.md").is_file():
            body.append("<h2>6. Comparison with other generators of the same latent codes</h2>")
            body.append(_markdown((cdir / "compare.md").read_text(), cdir))
            break
    for s in extra_sections or []:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body.append(s.html)
        body += [_figure(Path(p), cap) for p, cap in s.images]
    doc = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
           f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{html.escape(heading)}</title>"
           f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    target = Path(out) if out is not None else run_dir / "report.html"

    def _w(tmp: str) -> None:
        Path(tmp).write_text(doc, encoding="utf-8")

    atomic_write(target, _w)
    return target
