import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    import torch

    skip_slow = pytest.mark.skip(reason="slow: run with --runslow (or see benchmarks/)")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def ring():
    """(data, exact OT map, its singular set) of 400 ring8 points: 8 modes with known facets.
    Module scope: a module may re-cache ``ot.singular_set_``, another module gets its own."""
    from brenier.datasets import toy
    from brenier.ot import SemiDiscreteOT
    from brenier.sources import UniformBall

    d = toy("ring8", 400, seed=1)
    ot = SemiDiscreteOT(UniformBall(2), method="exact").fit(d.points)
    return d, ot, ot.singular_set()
