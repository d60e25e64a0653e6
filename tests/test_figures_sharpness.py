"""Kendall's τ in the sharpness report comes with its p-value, and below four models says it is
not meaningful (issue 22, item 6)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from scipy.stats import kendalltau

from llv.plot import make_plot
from llv.plot.sharpness import GAPS, MEASURES, MIN_MODELS, Correlation, kendall_tau, read_rows


def write_point(folder, lambda_max, gap):
    folder.mkdir(parents=True)
    values = dict(lambda_max=lambda_max, lambda_min=-0.1 * lambda_max, trace=8.0 * lambda_max,
                  trace_stderr=0.5, epsilon_sharpness=2.0 * lambda_max + gap,
                  adaptive_sharpness=0.01 * lambda_max, direction_increase=0.1 * gap,
                  direction_increase_std=0.01, train_loss=0.01, test_loss=0.01 + gap,
                  train_acc=100.0, test_acc=100.0 - 10 * gap)
    with h5py.File(folder / "hessian.h5", "w") as f:
        f.create_dataset("eigenvalues", data=np.array([lambda_max]))
        f.attrs.update(values)
        f.attrs["gap_loss"] = gap
        f.attrs["gap_acc"] = 10 * gap
        f.attrs["test_error"] = 10 * gap
    return folder


LAMBDAS = [5.0, 2.0, 9.0, 4.0, 7.0, 1.0]
GAPS_STORED = [0.3, 0.1, 0.45, 0.35, 0.2, 0.05]


def test_tau_comes_with_scipys_p_value():
    x, y = np.array(LAMBDAS), np.array(GAPS_STORED)
    result = kendall_tau(x, y)
    expected = kendalltau(x, y)
    assert result == Correlation(pytest.approx(expected.statistic), pytest.approx(expected.pvalue),
                                 6)
    assert result.meaningful
    assert result.describe() == f"τ = {expected.statistic:.6g} (p = {expected.pvalue:.2g}, n = 6)"
    two = kendall_tau([1.0, 2.0], [0.1, 0.3])
    assert (two.tau, two.p, two.count) == (1.0, 1.0, 2) and not two.meaningful
    assert two.describe() == "τ = 1 (n = 2: not meaningful)"
    nan = kendall_tau([1.0, np.nan], [0.1, 0.3])
    assert math.isnan(nan.tau) and nan.count == 1 and not nan.meaningful
    assert MIN_MODELS == 4


@pytest.mark.parametrize("count", [2, 6])
def test_report_prints_p_values_and_flags_fewer_than_four_models(tmp_path, count):
    folders = [write_point(tmp_path / f"m{i}", LAMBDAS[i], GAPS_STORED[i]) for i in range(count)]
    figure_path, markdown, _ = make_plot("sharpness", folders, out=tmp_path / "report.png")
    lines = markdown.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| measure |"))
    assert header.count("| p vs ") == len(GAPS)
    (row,) = [line for line in lines if line.startswith("| λmax |")]
    cells = [c.strip() for c in row.split("|")[2:-1]]
    rows = read_rows(folders)
    gaps = np.array([r.values["gap_loss"] for r in rows])
    expected = kendalltau(np.array(LAMBDAS[:count]), gaps)
    assert float(cells[0]) == pytest.approx(expected.statistic, abs=1e-6)
    assert float(cells[len(GAPS)]) == pytest.approx(expected.pvalue, abs=1e-6)
    note = "not meaningful" in markdown.read_text()
    assert cells[-1] == (f"{count} (too few)" if count < MIN_MODELS else str(count))
    assert note == (count < MIN_MODELS)
    from llv.plot.sharpness import COLUMNS

    for measure in MEASURES:  # every measure has its row with τ and p for every gap
        (row,) = [line for line in lines if line.startswith(f"| {COLUMNS[measure]} |")]
        assert row.count("|") == 2 * len(GAPS) + 3


def test_figure_panels_say_when_tau_is_not_meaningful(tmp_path):
    from llv.plot._figure import PlotOptions
    from llv.plot.sharpness import correlations, figure_sharpness

    few = read_rows([write_point(tmp_path / f"a{i}", LAMBDAS[i], GAPS_STORED[i]) for i in range(3)])
    titles = [ax.get_title() for ax in figure_sharpness(few, correlations(few), PlotOptions()).axes
              if ax.get_visible()]
    assert all(t.endswith("(n = 3: not meaningful)") for t in titles)
    many = read_rows([write_point(tmp_path / f"b{i}", LAMBDAS[i], GAPS_STORED[i])
                      for i in range(6)])
    titles = [ax.get_title() for ax in figure_sharpness(many, correlations(many), PlotOptions()).axes
              if ax.get_visible()]
    assert titles[0].startswith("λmax: Kendall τ = ") and ", n = 6)" in titles[0]
    assert "p = " in titles[0]
