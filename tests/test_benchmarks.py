"""The benchmark against the reference algorithm compares like with like (no timing here)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if (
    str(ROOT) not in sys.path
):  # `benchmarks` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))


def test_reference_algorithm_gives_llv_point_evaluator_values():
    from benchmarks.reference_algorithm import agreement, make_case

    num_images = 48
    case = make_case("resnet8", channels=1, size=8, num_images=num_images, reference_batch_size=16)
    try:
        values = agreement(case, indices=(0, 1300, 2600))  # corner, centre, opposite corner
    finally:
        case.close()

    assert values["llv_loss"] == pytest.approx(values["reference_loss"], abs=1e-5, rel=0)
    # an argmax tie broken differently by rounding may move one image, no more
    assert values["llv_acc"] == pytest.approx(values["reference_acc"], abs=100 / num_images + 1e-9)
    assert (
        len({round(v, 4) for v in values["llv_loss"]}) == 3
    )  # three different points were compared


def test_reference_algorithm_with_loader_workers_gives_the_same_values():
    """Issue 20's comparison runs the reference's DataLoader with 2 worker processes, started
    anew at every point (the loader is iterated per point): the values must not change."""
    from benchmarks.reference_algorithm import agreement, make_case

    case = make_case("mlp", channels=1, size=8, num_images=40, reference_batch_size=16, threads=2)
    try:
        assert case.reference.loader.num_workers == 2
        assert not case.reference.loader.persistent_workers  # new workers at every point
        values = agreement(case, indices=(0, 1300))
    finally:
        case.close()

    assert values["llv_loss"] == pytest.approx(values["reference_loss"], abs=1e-5, rel=0)
    assert values["llv_loss"][0] != pytest.approx(values["llv_loss"][1], abs=1e-3)


def test_counted_products_sees_every_matvec_and_restores_the_method():
    """The Hessian section counts products at the operator, also those a caller leaves out of
    ``num_hvp`` (``Hessian._residuals`` resets it after its checks)."""
    import torch

    from benchmarks.hessian import CountedProducts
    from llv.spectrum import Hessian

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    hessian = Hessian(model, (torch.randn(20, 6), torch.randint(0, 3, (20,))),
                      dtype=torch.float64)
    op = hessian.operator
    v = torch.randn(op.n, dtype=torch.float64)
    counted = CountedProducts(op)
    try:
        before = op.num_hvp
        first = op.matvec(v)
        op.matvec(v)
        assert counted.calls == 2 and op.num_hvp == before + 2
        op.num_hvp = before  # as the residual check does: the products happened all the same
        op.matvec(v)
        assert counted.calls == 3 and op.num_hvp == before + 1
    finally:
        del op.matvec
    dense = op.to_dense()  # the operator's own method again: not counted
    assert counted.calls == 3
    assert torch.allclose(first, dense @ v, atol=1e-10)
