"""The fused CPU kernel (brenier.ot.fused): exact against brute force, its build, its fallback.

On small integers every score is exact in float32 whatever the order of the multiply-adds, so
the fused kernel must equal the brute-force path bitwise, ties included; the shapes are drawn to
cross its panel (32 columns), row-block (8 rows) and chunk boundaries.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import brenier.ot.fused as fused
from brenier.ot.potential import BrenierPotential

pytestmark = pytest.mark.skipif(not fused.available(), reason=f"fused kernel unavailable: {fused.unavailable_reason()}")


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


def test_rows_do_not_depend_on_threads_or_blocks():
    g = torch.Generator().manual_seed(1)
    y, x = torch.randn(3000, 16, generator=g), torch.randn(1001, 16, generator=g)
    packed = fused.PackedTargets(y)
    packed.set_heights(0.1 * torch.randn(3000, generator=g))
    one = fused.topk(x, packed, 4, threads=1)
    two = fused.topk(x, packed, 4, threads=2)
    parts = [fused.topk(p, packed, 4, threads=1) for p in x.split(97)]
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
    # a source that does not compile: unavailable, with the compiler's words, and no stray files
    bad = tmp_path / "bad.c"
    bad.write_text("int broken(void) { return }\n")
    monkeypatch.setattr(fused, "SOURCE", bad)
    monkeypatch.setattr(fused, "_lib", None)
    monkeypatch.setattr(fused, "_error", None)
    assert not fused.available()
    assert "failed" in fused.unavailable_reason()
    assert sorted((tmp_path / "cache" / "kernels").iterdir()) == built
    # no compiler at all
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(fused, "_error", None)
    assert not fused.available() and "no C compiler" in fused.unavailable_reason()
    # switched off by the environment
    monkeypatch.setenv("BRENIER_FUSED", "0")
    monkeypatch.setattr(fused, "_error", None)
    assert not fused.available() and "BRENIER_FUSED" in fused.unavailable_reason()


def test_bad_input_and_padding():
    y = torch.randn(40, 3)  # 40 targets: the second panel is mostly padding (h = -inf there)
    packed = fused.PackedTargets(y)
    packed.set_heights(torch.zeros(40))
    assert packed.hpad.shape[0] % packed.width == 0 and bool(torch.isinf(packed.hpad[40:]).all())
    v, i = fused.topk(torch.randn(9, 3), packed, 40)
    assert bool((i < 40).all()) and bool(torch.isfinite(v).all())
    assert sorted(i[0].tolist()) == list(range(40))  # k = N: every real target once
    with pytest.raises(ValueError, match="k must be"):
        fused.topk(torch.randn(2, 3), packed, 41)
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        fused.topk(torch.randn(2, 4), packed, 1)
    v, i = fused.topk(torch.randn(0, 3), packed, 2)
    assert v.shape == (0, 2) and i.shape == (0, 2)
