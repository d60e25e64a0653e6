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
