"""The fused CPU kernel (brenier.ot.fused): exact against brute force, its build, its fallback.

On small integers every score is exact in float32 whatever the order of the multiply-adds, so
the fused kernel must equal the brute-force path bitwise, ties included; the shapes are drawn to
cross its panel (32 columns), row-block (8 rows) and chunk boundaries.
"""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import brenier.ot.fused as fused
from brenier.ot.potential import BrenierPotential

pytestmark = pytest.mark.skipif(not fused.available(), reason=f"fused kernel unavailable: {fused.unavailable_reason()}")
needs_bf16 = pytest.mark.skipif(not fused.bf16_available(), reason="no AVX512-BF16 on this CPU")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 130), st.integers(1, 40), st.integers(1, 45), st.integers(0, 2**31 - 1), st.integers(1, 9),
       st.sampled_from([4 * 32, 2**19]))
def test_fused_equals_brute_on_small_integer_problems(n, d, m, seed, k, chunk_bytes):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(-3, 4, (n, d), generator=g).float()
    h = torch.randint(-3, 4, (n,), generator=g).double()
    x = torch.randint(-2, 3, (m, d), generator=g).float()
    ref = BrenierPotential(y, h, search="brute")
    old = fused.CHUNK_BYTES
    fused.CHUNK_BYTES = chunk_bytes  # one panel a chunk: every chunk boundary is crossed
    try:
        pot = BrenierPotential(y, h, search="fused")
        v, i = pot.argmax(x)
        rv, ri = ref.argmax(x)
        assert torch.equal(i, ri) and torch.equal(v, rv)
        tv, ti = pot.topk(x, k)
        rtv, rti = ref.topk(x, k)
        assert torch.equal(ti, rti) and torch.equal(tv, rtv)
        if n > 1:
            b, j, s = pot.runner_up(x)
            rb, rj, rs = ref.runner_up(x)
            assert torch.equal(j, rj) and torch.equal(b, rb) and torch.equal(s, rs)
    finally:
        fused.CHUNK_BYTES = old
    assert pot.evaluations == (3 if n > 1 else 2) * m * n


@pytest.mark.parametrize("screen", [False, pytest.param(True, marks=needs_bf16)])
def test_rows_do_not_depend_on_threads_or_blocks(screen):
    g = torch.Generator().manual_seed(1)
    y, x = torch.randn(3000, 16, generator=g), torch.randn(1001, 16, generator=g)
    packed = fused.PackedTargets(y, screen=screen)
    packed.set_heights(0.1 * torch.randn(3000, generator=g))
    one = fused.topk(x, packed, 4, threads=1)
    two = fused.topk(x, packed, 4, threads=2)
    parts = [fused.topk(p, packed, 4, threads=1)[:2] for p in x.split(97)]
    for got in (two, tuple(torch.cat(c) for c in zip(*parts))):
        assert torch.equal(got[0], one[0]) and torch.equal(got[1], one[1])
    # the value is h_n plus d multiply-adds: within float32 rounding of the float64 score
    s64 = x.double() @ y.double().T + packed.hpad[:3000].double()
    assert (one[0][:, 0].double() - s64.max(1).values).abs().max() < 1e-5
    assert (one[0].double() - s64.gather(1, one[1])).abs().max() < 1e-5


def test_auto_uses_fused_on_cpu_float32_and_falls_back(monkeypatch):
    g = torch.Generator().manual_seed(2)
    y, x = torch.randn(2000, 6, generator=g), torch.randn(500, 6, generator=g)
    h = torch.zeros(2000, dtype=torch.float64)
    pot = BrenierPotential(y, h)
    pot.topk(x, 3)
    assert pot._packed is not None  # the fused kernel answered
    pot64 = BrenierPotential(y, h, compute_dtype=torch.float64)
    pot64.argmax(x)
    assert pot64._packed is None  # float64 scores: the tiled path
    with pytest.raises(RuntimeError, match="float32"):
        BrenierPotential(y, h, search="fused", compute_dtype=torch.float64)
    # no kernel: auto keeps the tiled path, an explicit request says why
    monkeypatch.setattr(fused, "_lib", None)
    monkeypatch.setattr(fused, "_error", "no C compiler found")
    assert not fused.available() and fused.unavailable_reason() == "no C compiler found"
    fallback = BrenierPotential(y, h)
    assert torch.equal(fallback.argmax(x)[1], BrenierPotential(y, h, search="brute").argmax(x)[1])
    assert fallback._packed is None
    with pytest.raises(RuntimeError, match="no C compiler"):
        BrenierPotential(y, h, search="fused")


def test_build_caches_atomically_and_reports_failures(monkeypatch, tmp_path):
    monkeypatch.setenv("BRENIER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fused, "_lib", None)
    monkeypatch.setattr(fused, "_error", None)
    lib = fused.library()
    built = sorted((tmp_path / "cache" / "kernels").iterdir())
    assert len(built) == 1 and built[0].name.startswith("fused_topk-") and built[0].suffix == ".so"
    assert lib.brenier_panel_width() in (16, 32)
    monkeypatch.setattr(fused, "_lib", None)
    fused.library()
    assert sorted((tmp_path / "cache" / "kernels").iterdir()) == built  # reused, nothing left behind
    # a damaged cache entry (say a full disk cut it short) is built again, not trusted or fatal;
    # in another folder: this process has the first file mapped, and dlopen would hand it back
    damaged = tmp_path / "cache2" / "kernels" / built[0].name
    damaged.parent.mkdir(parents=True, mode=0o700)
    damaged.write_bytes(b"not a shared library")
    monkeypatch.setenv("BRENIER_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setattr(fused, "_lib", None)
    assert fused.library().brenier_panel_width() in (16, 32)
    assert sorted(damaged.parent.iterdir()) == [damaged] and damaged.stat().st_size > 1000
    # a source that does not compile: unavailable, with the compiler's words, and no stray files
    bad = tmp_path / "bad.c"
    bad.write_text("int broken(void) { return }\n")
    monkeypatch.setattr(fused, "SOURCE", bad)
    monkeypatch.setattr(fused, "_lib", None)
    monkeypatch.setattr(fused, "_error", None)
    with pytest.warns(RuntimeWarning, match="fused CPU kernel is unavailable"):
        assert not fused.available()
    assert "failed" in fused.unavailable_reason()
    assert sorted((tmp_path / "cache" / "kernels").iterdir()) == built
    # no compiler at all
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(fused, "_error", None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not fused.available()
    assert "no C compiler" in fused.unavailable_reason()
    # a cache folder others can write to is refused (a planted library would run as this user)
    shared = tmp_path / "shared"
    (shared / "kernels").mkdir(parents=True)
    (shared / "kernels").chmod(0o777)
    monkeypatch.delenv("CC")
    monkeypatch.setenv("BRENIER_CACHE", str(shared))
    monkeypatch.setattr(fused, "SOURCE", fused.Path(fused.__file__).with_name("fused_topk.c"))
    monkeypatch.setattr(fused, "_error", None)
    with pytest.warns(RuntimeWarning, match="writable by others"):
        assert not fused.available()
    assert "writable by others" in fused.unavailable_reason()
    # switched off by the environment
    monkeypatch.setenv("BRENIER_FUSED", "0")
    monkeypatch.setattr(fused, "_error", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a choice, not a failure: quiet
        assert not fused.available() and "BRENIER_FUSED" in fused.unavailable_reason()


def test_bad_input_and_padding():
    y = torch.randn(40, 3)  # 40 targets: the second panel is mostly padding (h = -inf there)
    packed = fused.PackedTargets(y)
    packed.set_heights(torch.zeros(40))
    assert packed.hpad.shape[0] % packed.width == 0 and bool(torch.isinf(packed.hpad[40:]).all())
    v, i, _ = fused.topk(torch.randn(9, 3), packed, 40)
    assert bool((i < 40).all()) and bool(torch.isfinite(v).all())
    assert sorted(i[0].tolist()) == list(range(40))  # k = N: every real target once
    with pytest.raises(ValueError, match="k must be"):
        fused.topk(torch.randn(2, 3), packed, 41)
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        fused.topk(torch.randn(2, 4), packed, 1)
    v, i, _ = fused.topk(torch.randn(0, 3), packed, 2)
    assert v.shape == (0, 2) and i.shape == (0, 2)


@needs_bf16
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(1, 33), st.integers(1, 40), st.integers(0, 2**31 - 1), st.integers(1, 6),
       st.sampled_from([1e-3, 1.0, 1e3]), st.sampled_from([0.0, 1e-4, 1.0, 50.0]), st.booleans(),
       st.sampled_from([4 * 32, 2**19]), st.sampled_from([None, 2, 4, 10]))
def test_bf16_screen_gives_the_float32_kernels_bits(n, d, m, seed, k, scale, hscale, near_ties, chunk_bytes, rank):
    """Random float data at several scales, heights small or dominant, and near-ties (targets
    duplicated up to one ulp): the screened answer is the float32 kernel's, bit for bit -- also with
    a first screen on ``rank`` principal axes (two levels) however poorly they fit the targets."""
    g = torch.Generator().manual_seed(seed)
    y = scale * torch.randn(n, d, generator=g)
    if near_ties and n > 1:
        y[1::2] = torch.nextafter(y[0::2][: y[1::2].shape[0]], torch.tensor(float("inf")))
    h = hscale * torch.randn(n, generator=g)
    x = torch.randn(m, d, generator=g) / scale
    k = min(k, n)
    old = fused.CHUNK_BYTES
    fused.CHUNK_BYTES = chunk_bytes  # with 128 bytes: one panel per chunk, candidates settled after each
    try:
        plain, screened = fused.PackedTargets(y, screen=False), fused.PackedTargets(y, screen=True, rank=rank)
    finally:
        fused.CHUNK_BYTES = old
    assert plain.ybf is None and screened.ybf is not None
    if rank is not None:  # forced; by default a few targets may well lie near a subspace
        assert (screened.rot is not None) == (rank < d)
    for p in (plain, screened):
        p.set_heights(h)
    v0, i0, r0 = fused.topk(x, plain, k)
    v1, i1, r1 = fused.topk(x, screened, k)
    assert torch.equal(i0, i1) and torch.equal(v0, v1)
    # at least the panel of each row's best is rescored; two levels may score a panel twice more
    assert r0 == 0 and 0 < r1 <= (1 if screened.rot is None else 2) * m * plain.panels * plain.width


@needs_bf16
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.integers(1, 20), st.integers(1, 40), st.integers(0, 2**31 - 1),
       st.sampled_from([1, 2, 3, 5, 17, 64]), st.sampled_from([4 * 32, 2 * 4 * 32 * 20, 2**19]), st.booleans(),
       st.sampled_from([None, 2, 6]))
def test_bf16_screen_keeps_every_tie_on_small_integer_problems(n, d, m, seed, k, chunk_bytes, copies, rank):
    """Small integers: every score is exact (in bf16 too), so ties are everywhere, also across
    panels and chunks (with ``copies``, the second half of the targets repeats the first, heights
    included). The screen skips a panel only when its targets score strictly below the final k-th
    best, so the lowest index must still win every tie: the answer equals brute force bitwise (also
    through a first screen on ``rank`` principal axes)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(-3, 4, (n, d), generator=g).float()
    h = torch.randint(-3, 4, (n,), generator=g).float()
    if copies and n > 1:
        half = n // 2
        y[n - half:], h[n - half:] = y[:half], h[:half]
    x = torch.randint(-2, 3, (m, d), generator=g).float()
    k = min(k, n)
    ref = BrenierPotential(y, h.double(), search="brute")
    old = fused.CHUNK_BYTES
    fused.CHUNK_BYTES = chunk_bytes  # one panel, a few, or all per chunk
    try:
        packed = fused.PackedTargets(y, screen=True, rank=rank)
    finally:
        fused.CHUNK_BYTES = old
    packed.set_heights(h)
    v, i, _ = fused.topk(x, packed, k)
    rv, ri = ref.topk(x, k)
    assert torch.equal(i, ri) and torch.equal(v, rv)


@needs_bf16
@pytest.mark.parametrize("k, rank", [(1, None), (3, None), (1, 2), (3, 4)])
def test_bf16_screen_across_row_groups(k, rank):
    """More rows than one group of the screen's state (2,048), the last one partial, on one
    thread: every row's answer is still the float32 kernel's (targets with exact copies, so ties)."""
    g = torch.Generator().manual_seed(k)
    y = torch.randn(700, 5, generator=g)
    y[350:] = y[:350]
    h = 0.1 * torch.randn(700, generator=g)
    h[350:] = h[:350]
    x = torch.randn(4500, 5, generator=g)
    plain, screened = fused.PackedTargets(y, screen=False), fused.PackedTargets(y, screen=True, rank=rank)
    for p in (plain, screened):
        p.set_heights(h)
    v0, i0, _ = fused.topk(x, plain, k, threads=1)
    v1, i1, r1 = fused.topk(x, screened, k, threads=1)
    assert torch.equal(i0, i1) and torch.equal(v0, v1)
    assert 0 < r1 < 4500 * 704


@needs_bf16
def test_two_level_screen_on_targets_near_a_subspace():
    """Targets within 1 % of a 6-dimensional subspace of R^24 (as autoencoder codes lie near a
    low-dimensional set): the screen picks a first level on their principal axes by itself, and
    answers with the float32 kernel's bits; Gaussian targets keep the one-level screen."""
    g = torch.Generator().manual_seed(5)
    y = torch.randn(5000, 6, generator=g) @ torch.randn(6, 24, generator=g) + 0.01 * torch.randn(5000, 24, generator=g)
    y = y / y.norm(dim=1).max()
    h = -0.5 * (y * y).sum(1) + 0.002 * torch.randn(5000, generator=g)
    x = torch.randn(3000, 24, generator=g)
    x = x / x.norm(dim=1, keepdim=True) * torch.rand(3000, 1, generator=g) ** (1 / 24)
    low, plain = fused.PackedTargets(y), fused.PackedTargets(y, screen=False)
    assert low.rot is not None and low.screen_dim < 24
    assert fused.PackedTargets(torch.randn(5000, 24, generator=g)).rot is None
    for p in (low, plain):
        p.set_heights(h)
    for k in (1, 4):
        v0, i0, _ = fused.topk(x, plain, k)
        v1, i1, extra = fused.topk(x, low, k)
        assert torch.equal(i0, i1) and torch.equal(v0, v1)
        assert 0 < extra < 0.5 * 3000 * 5000  # the row-panels scored again, counted


@needs_bf16
def test_bf16_screen_on_mnist_like_scale_skips_most_panels(monkeypatch):
    g = torch.Generator().manual_seed(4)
    y = torch.randn(6000, 16, generator=g)
    y = y / y.norm(dim=1).max()
    h = -0.5 * (y * y).sum(1) + 0.002 * torch.randn(6000, generator=g)
    x = torch.randn(3000, 16, generator=g)
    x = x / x.norm(dim=1, keepdim=True) * torch.rand(3000, 1, generator=g) ** (1 / 16)
    pot = BrenierPotential(y, h.double(), search="fused")
    ref = BrenierPotential(y, h.double(), search="brute")
    v, i = pot.argmax(x)
    assert pot._packed.ybf is not None  # 6,000 >= SCREEN_MIN_TARGETS: screened
    rv, ri = ref.argmax(x)
    assert (i == ri).float().mean() > 0.999
    torch.testing.assert_close(v, rv, rtol=1e-6, atol=1e-6)
    # every pair screened once, plus the rescored ones: a few per cent here, counted
    extra = pot.evaluations - 3000 * 6000
    assert 0 < extra < 0.1 * 3000 * 6000
    monkeypatch.setattr(fused, "SCREEN", False)
    plain = BrenierPotential(y, h.double(), search="fused")
    pv, pi = plain.argmax(x)
    assert plain._packed.ybf is None and plain.evaluations == 3000 * 6000
    assert torch.equal(pi, i) and torch.equal(pv, v)
