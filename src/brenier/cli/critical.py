"""``brenier critical``: critical frames of a process — fit AEOT on its stable frames, find where held-out
paths cross the singular set, compare with straight and diffusion-latent interpolations."""

from __future__ import annotations

import math
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.text import Text

from ._common import (
    DeviceKind,
    FitWarnings,
    allow_unconverged_option,
    app,
    command,
    console,
    fail,
    fmt,
    prepare_out,
    table,
    user_errors,
    write_outputs,
)


class ProcessKind(str, Enum):
    occlusion = "occlusion"
    glass = "glass"
    tipping = "tipping"


def _process(kind: ProcessKind, n: int, seed: int):
    from ..datasets.scenes import occlusion_scenes, tilting_glass, tipping_glass

    if kind is ProcessKind.occlusion:
        s = occlusion_scenes(n, 32, seed=seed)
        return s, s.count
    s = (tilting_glass if kind is ProcessKind.glass else tipping_glass)(n, 48, seed=seed)
    return s, s.state


@command(app, "critical")
def critical_command(
    data: ProcessKind = typer.Option(ProcessKind.occlusion, "--data", "-d", help="The process: occluding discs, a glass tilting past its spill angle, or a glass pushed over (tipping)."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Output directory (created if needed).", show_default=False),
    model_dir: Optional[Path] = typer.Option(None, "--model", metavar="RUN", help="Reuse a saved AEOT (default: fit one on the stable frames and save it in DIR/model).", show_default=False),
    train: int = typer.Option(80, "--train", min=2, help="Training trajectories (only their stable frames are used)."),
    latent: Optional[int] = typer.Option(None, "--latent", min=1, help="Latent dimension of a new model. Default 8; 3 for tipping (its frames have intrinsic dimension about 2.2-2.7, and the OT solver is much faster near it).", show_default=False),
    epochs: int = typer.Option(40, "--epochs", min=1, help="Autoencoder epochs of a new model."),
    max_train_time: float = typer.Option(150.0, "--max-train-time", help="Cap on the autoencoder's training time (s)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Score above which a frame is critical. Default 1.0 with --scale local (distance to the nearest stable code / the local 8-NN radius there), 3.0 with --scale global (/ the median neighbour distance).", show_default=False),
    scale: str = typer.Option("local", "--scale", help="local: distances in units of the local density of the stable codes; global: one unit for all."),
    diffusion_steps: int = typer.Option(2000, "--diffusion-steps", min=1, help="Training steps of the DDPM whose latent interpolation is shown beside the walk."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data, the model and the walk."),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="Where the model computes."),
    allow_unconverged: bool = allow_unconverged_option(),
) -> None:
    """Critical frames of a process: fit AEOT on its stable frames, find where held-out paths cross the singular set."""
    from .._array import first_unique_rows
    from .._io import write_json
    from ..critical import critical_codes, match_events, mode_of, plot_filmstrip, plot_paths, plot_scores, step_size_frames
    from ..datasets.scenes import count_discs
    from ..pipeline import AEOT

    if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
        fail(f"--threshold: expected a positive number, got {threshold}")
    if scale not in ("local", "global"):
        fail(f"--scale: expected local or global, got {scale!r}")
    latent = latent or (3 if data is ProcessKind.tipping else 8)
    t0 = time.perf_counter()
    out = prepare_out(out)
    con = console()
    fits = FitWarnings()
    tr, truth = _process(data, train, 3 * seed + 1)
    te, state = _process(data, 6, 3 * seed + 2)
    stable, stable_truth = tr.stable_frames(), truth[~tr.critical]
    # identical stable frames (the glass once its puddle has stopped spreading) are one state:
    # fitted once, as in benchmarks/critical.py (the OT would merge their codes anyway)
    first = first_unique_rows(stable)
    n_stable, stable, stable_truth = len(stable), stable[first], stable_truth[first]
    if model_dir is not None:
        model = user_errors(lambda: AEOT.load(model_dir, device=device.value))
        if tuple(model.image_shape_) != tuple(stable.shape[1:]):
            fail(f"--model {model_dir}: fitted on images of shape {tuple(model.image_shape_)}, but --data {data.value} "
                 f"frames are {tuple(stable.shape[1:])} (a run fitted on other data)")
        con.print(Text(f"brenier critical: reusing the model in {model_dir} (latent dimension {model.latent_dim})"))
    else:
        con.print(Text.assemble(("brenier critical", "bold"), f": fitting AEOT (latent {latent}) on the {len(stable):,} distinct stable frames "
                                f"({n_stable:,} in all) of {train} {data.value} trajectories"))
        model = AEOT(latent, device=device.value, seed=seed, epochs=epochs, patience=8, max_train_time=max_train_time,
                     ae_options={"channels": (16, 32), "hidden": 128})
        with fits.watch():
            user_errors(lambda: model.fit(stable, progress=True))
        write_outputs(f"--out {out}", lambda: model.save(out / "model"))
    fit_s = time.perf_counter() - t0

    T, F = te.frames.shape[:2]
    z = np.asarray(model.encode(te.frames.reshape(T * F, *te.frames.shape[2:]))).reshape(T, F, -1)
    results = [user_errors(lambda zz=zz: critical_codes(model, zz, threshold=threshold, scale=scale)) for zz in z]
    threshold = float(results[0].threshold)  # the default of the scale when none was given
    tot = {"tp": 0, "n_detected": 0, "events_hit": 0, "n_events": 0}
    alt = dict(tot)
    for r, zz, crit in zip(results, z, te.critical):
        for k, v in match_events(r.indices, crit).items():
            if k in tot:
                tot[k] += v
        for k, v in match_events(step_size_frames(r.codes, 1.5)[0], crit).items():
            if k in alt:
                alt[k] += v
    def _pr(m):
        return (m["tp"] / m["n_detected"] if m["n_detected"] else 1.0, m["events_hit"] / m["n_events"] if m["n_events"] else 1.0)
    prec, rec = _pr(tot)
    aprec, arec = _pr(alt)
    r0 = results[0]
    plot_filmstrip(out / "filmstrip.png", te.frames[0], r0, te.critical[0],
                   title=f"held-out {data.value} trajectory — red: reported critical (score > {threshold:g} or mode change); orange: ground truth")
    plot_scores(out / "score.png", r0, te.critical[0], 1.5, title=f"critical-frame score along held-out trajectory 0 ({data.value})")

    # a generated path that stays in one mode (reflect_walk in the source, mapped by the OT map) beside a
    # straight latent interpolation between two modes
    from ..sampling import reflect_walk

    ot = model.ot_
    S = model.singular_set_ or ot.singular_set()
    n_frames = 16
    xs = np.asarray(reflect_walk(ot, n_frames - 1, 0.5, seed=seed))
    y_walk = np.asarray(ot.transport(xs))
    labels = lambda y: mode_of(model, y)[0]  # the modes critical_frames uses
    m_walk = labels(y_walk)
    codes = np.asarray(model.codes_)
    modes = labels(codes)
    a = int(np.flatnonzero(modes == m_walk[0])[0])
    others = np.flatnonzero(modes != m_walk[0])
    if model_dir is None:
        # a model fitted here: its codes are these stable frames, whose ground truth (visible count,
        # glass state) is known; end at the nearest code of another mode *and* another state, so
        # that the interpolations cross between two physical states, not two pieces of one
        state = stable_truth[np.asarray(model.code_index_)]
        differ = others[state[others] != state[a]]
        others = differ if len(differ) else others
    b = int(others[np.argmin(np.linalg.norm(codes[others] - codes[a], axis=1))]) if len(others) else a
    s = np.linspace(0.0, 1.0, n_frames)[:, None]
    y_line = (1 - s) * codes[a] + s * codes[b]
    m_line = labels(y_line)
    # the diffusion model's own interpolation between the same two codes: a DDPM fitted to the
    # codes, both ends inverted to its Gaussian latent by DDIM, slerp there, decoded by DDIM
    from ..baselines.ddpm import DDPMBaseline

    t_dm = time.perf_counter()
    con.print(Text(f"  fitting a DDPM on the {len(codes):,} codes for the diffusion-latent interpolation ({diffusion_steps} steps)", style="dim"))
    with fits.watch():
        ddpm = DDPMBaseline(seed=seed, steps=diffusion_steps, hidden=128, batch_size=256, device=device.value).fit(codes)
    y_diff = ddpm.interpolate(codes[a], codes[b], n_frames)
    m_diff = labels(y_diff)
    dm_s = time.perf_counter() - t_dm
    dec = lambda y: np.asarray(model.decode(np.asarray(model.denormalise(y))))
    f_walk, f_line, f_diff = dec(y_walk), dec(y_line), dec(y_diff)
    cap = (lambda f, m: [f"m{mm} n{c}" + ("!" if k and (mm != m[k - 1]) else "") for k, (mm, c) in enumerate(zip(m, count_discs(f)))]) \
        if data is ProcessKind.occlusion else (lambda f, m: [f"m{mm}" + ("!" if k and mm != m[k - 1] else "") for k, mm in enumerate(m)])
    plot_paths(out / "walk.png", [("reflect_walk\n(OT, respects\nthe singular set)", f_walk, cap(f_walk, m_walk)),
                                  ("diffusion-latent\ninterpolation\n(DDIM slerp)", f_diff, cap(f_diff, m_diff)),
                                  ("straight latent\ninterpolation", f_line, cap(f_line, m_line))],
               title="generated paths, decoded — m: mode of the code" + (", n: visible discs read off the pixels" if data is ProcessKind.occlusion else "")
               + ", !: mode jump")
    summary = {
        "data": data.value, "n_train_trajectories": train, "n_stable_frames": int(len(stable)), "latent_dim": int(model.latent_dim),
        "threshold": threshold, "scale": scale, "modes_from": r0.modes_from, "n_modes": int(modes.max() + 1), "singular_set_modes": int(S.n_modes),
        "heldout": {"trajectories": T, **tot, "precision": prec, "recall": rec},
        "step_size_alternative": {"threshold": 1.5, **alt, "precision": aprec, "recall": arec},
        "trajectory0": {"reported": r0.indices.tolist(), "truth": np.flatnonzero(te.critical[0]).tolist(), "score": r0.score.tolist()},
        "reflect_walk_modes": m_walk.tolist(), "interpolation_modes": m_line.tolist(),
        "diffusion_interpolation_modes": m_diff.tolist(), "diffusion": {"train_steps": diffusion_steps, "time_s": round(dm_s, 2),
                                                                          "final_loss": ddpm.final_loss_},
        "time_s": round(time.perf_counter() - t0, 2), "fit_or_load_s": round(fit_s, 2), "seed": seed,
    }
    write_outputs(f"--out {out}", lambda: write_json(out / "summary.json", summary))
    rows = [
        ("data", f"{data.value}: model on {len(stable):,} distinct stable frames; {T} held-out trajectories, {tot['n_events']} critical events"),
        ("modes", f"{int(modes.max() + 1)} from the {r0.modes_from} rule (the singular set has {S.n_modes} mode(s), {S.n_facets} singular facets)"),
        ("critical_frames", f"precision {prec:.2f}, recall {rec:.2f} (±2 frames; {tot['n_detected']} frames reported)"),
        ("latent step > 1.5× median", f"precision {fmt(aprec if alt['n_detected'] else None, '.2f')}, recall {arec:.2f} ({alt['n_detected']} frames reported)"),
        ("reflect_walk", f"{len(set(m_walk.tolist()))} mode(s) along {n_frames} frames"),
        ("diffusion interpolation", f"{int((m_diff[1:] != m_diff[:-1]).sum())} mode jump(s) (DDIM inversion + slerp, DDPM fit {dm_s:.0f} s)"),
        ("straight interpolation", f"{int((m_line[1:] != m_line[:-1]).sum())} mode jump(s)"),
        ("time", f"{summary['time_s']:.1f} s"),
        ("saved", f"{out}/  filmstrip.png, score.png, walk.png, summary.json" + ("" if model_dir else ", model/")),
    ]
    con.print(table("Critical frames", rows))
    fits.finish(allow_unconverged)
