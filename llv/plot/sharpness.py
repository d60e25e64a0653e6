"""Sharpness versus generalization: one row per model, and each measure against the gap.

``llv plot sharpness RUN_OR_FILE...`` reads ``llv hessian`` point files (``hessian.h5``, or run
folders holding one), prints a table of every curvature and sharpness measure with the train/test
figures, writes it as Markdown and CSV next to the first input (``<stem>_sharpness.md``/``.csv``,
or beside ``--out``), and draws one scatter panel per measure against the generalization gap
(test − train loss) with Kendall's τ (:func:`scipy.stats.kendalltau`, τ-b) in its title. The
Markdown adds τ of every measure with the loss gap, the accuracy gap and the test error.

Every τ comes with its two-sided p-value. With fewer than :data:`MIN_MODELS` models τ is
printed but called not meaningful: it can take only a few values (±1 for two models, and no
ranking of three is ever significant at 5 %).
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from llv.console import LlvError, log, print_table
from llv.fsio import atomic_write
from llv.plot._figure import PlotOptions, new_figure, run_label, save_figure
from llv.plot.io import load_hessian_point

#: Stored attribute -> column header, in table order (``model`` is the row's label).
COLUMNS: dict[str, str] = {
    "lambda_max": "λmax",
    "lambda_min": "λmin",
    "trace": "trace",
    "epsilon_sharpness": "ε-sharpness",
    "adaptive_sharpness": "adaptive sharpness",
    "direction_increase": "direction increase",
    "direction_increase_std": "± std",
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_acc": "train acc (%)",
    "test_acc": "test acc (%)",
    "gap_loss": "gap (test − train loss)",
    "gap_acc": "gap (train − test acc)",
    "test_error": "test error (%)",
}

#: The measures drawn against the gap, each with the attribute of its error bar (or None).
MEASURES: dict[str, str | None] = {
    "lambda_max": None,
    "lambda_min": None,
    "trace": "trace_stderr",
    "epsilon_sharpness": None,
    "adaptive_sharpness": None,
    "direction_increase": "direction_increase_std",
}

#: What each measure is correlated with in the Markdown; the figure uses the first.
GAPS = ("gap_loss", "gap_acc", "test_error")

#: Below this many models Kendall's τ is reported as not meaningful.
MIN_MODELS = 4


class Correlation(NamedTuple):
    """Kendall's τ-b, its two-sided p-value (H0: τ = 0), and how many models it is over."""

    tau: float
    p: float
    count: int

    @property
    def meaningful(self) -> bool:
        return self.count >= MIN_MODELS and math.isfinite(self.tau)

    def describe(self) -> str:
        """``τ = 0.6 (p = 0.14, n = 6)``, or ``τ = 1 (n = 2: not meaningful)`` below
        :data:`MIN_MODELS` models.

        >>> Correlation(1.0, 1.0, 2).describe()
        'τ = 1 (n = 2: not meaningful)'
        >>> Correlation(0.6, 0.136, 6).describe()
        'τ = 0.6 (p = 0.14, n = 6)'
        """
        tau = _cell(self.tau) or "n/a"
        if self.count < MIN_MODELS:
            return f"τ = {tau} (n = {self.count}: not meaningful)"
        return f"τ = {tau} (p = {self.p:.2g}, n = {self.count})"


@dataclass
class ModelRow:
    """One model: its label, the file it came from, and the stored values (NaN if absent)."""

    label: str
    path: Path
    values: dict[str, float]


def resolve_input(path: Path) -> Path:
    """A ``hessian.h5`` file, or the one inside a run folder."""
    path = Path(path)
    if path.is_dir():
        inside = path / "hessian.h5"
        if not inside.is_file():
            raise LlvError(f"{path} holds no hessian.h5 "
                           "(make one with 'llv hessian checkpoint=...')")
        return inside
    return path


def model_label(path: Path, attrs: dict) -> str:
    """The run's name, else the checkpoint's training run (and file, unless ``final``).

    >>> model_label(Path("out/2024-01-01_00-00-00/hessian.h5"),
    ...             {"checkpoint": "train/2024-01-01_00-00-00_sam/checkpoints/epoch_010.pt"})
    'sam/epoch_010'
    """
    folder = Path(path).resolve().parent.name
    label = run_label(Path(path))
    if label != folder:  # the run folder has a name after its timestamp
        return label
    checkpoint = attrs.get("checkpoint")
    if not checkpoint:
        return label
    checkpoint = Path(str(checkpoint))
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    name = run_label(Path(f"{run.name}.pt")) if run.name else ""  # the folder name, no timestamp
    return f"{name}/{checkpoint.stem}" if checkpoint.stem != "final" else (name or checkpoint.stem)


def read_rows(paths: list[Path]) -> list[ModelRow]:
    """One :class:`ModelRow` per input, labels made unique; warns about measures not stored."""
    rows, seen = [], {}
    for given in paths:
        path = resolve_input(given)
        point = load_hessian_point(path)
        attrs = point.attrs
        if "lambda_max" not in attrs:
            raise LlvError(f"{path} is not an llv hessian point file (no lambda_max attribute)")
        wanted = (*COLUMNS, *filter(None, MEASURES.values()))
        values = {key: _number(attrs.get(key)) for key in wanted}
        missing = [key for key in COLUMNS if math.isnan(values[key])]
        if missing:
            log.warning(f"{path}: no {', '.join(missing)} (an older file, or no test split?)")
        label = model_label(path, attrs)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} ({seen[label]})"
        rows.append(ModelRow(label, path, values))
    return rows


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def kendall_tau(x, y) -> Correlation:
    """τ-b and its p-value over the finite pairs (NaN below two pairs or for a constant)."""
    from scipy.stats import kendalltau

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    count = int(finite.sum())
    if count < 2:
        return Correlation(math.nan, math.nan, count)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: scipy warns and returns NaN
        result = kendalltau(x[finite], y[finite])
    return Correlation(float(result.statistic), float(result.pvalue), count)


def correlations(rows: list[ModelRow]) -> dict[str, dict[str, Correlation]]:
    """measure -> gap -> :class:`Correlation` (τ, p-value, number of models with both)."""
    def tau(measure: str, gap: str) -> Correlation:
        return kendall_tau([r.values[measure] for r in rows], [r.values[gap] for r in rows])

    return {m: {g: tau(m, g) for g in GAPS} for m in MEASURES}


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def write_csv(rows: list[ModelRow], out: Path) -> Path:
    """Machine-readable table: ``model``, every :data:`COLUMNS` key, ``file``."""
    def write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(["model", *COLUMNS, "file"])
        for row in rows:
            writer.writerow([row.label, *(repr(row.values[k]) for k in COLUMNS), str(row.path)])

    atomic_write(out, write, "sharpness table", text=True)
    log.info("wrote %s", out)
    return out


def write_markdown(rows: list[ModelRow], taus: dict, out: Path) -> Path:
    """The table and Kendall's τ of every measure with every gap."""
    lines = ["# Sharpness versus generalization", "",
             "| model | " + " | ".join(COLUMNS.values()) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| {row.label} | " + " | ".join(_cell(row.values[k]) for k in COLUMNS) + " |"
              for row in rows]
    lines += ["", "## Kendall's τ with the generalization gap", "",
              "| measure | " + " | ".join(f"τ vs {COLUMNS[g]}" for g in GAPS) + " | "
              + " | ".join(f"p vs {COLUMNS[g]}" for g in GAPS) + " | models |",
              "|---|" + "---:|" * (2 * len(GAPS) + 1)]
    few = False
    for measure, by_gap in taus.items():
        count = by_gap[GAPS[0]].count
        few |= count < MIN_MODELS
        lines.append(f"| {COLUMNS[measure]} | "
                     + " | ".join(_cell(by_gap[g].tau) for g in GAPS) + " | "
                     + " | ".join(_cell(by_gap[g].p) for g in GAPS)
                     + f" | {count}{' (too few)' if count < MIN_MODELS else ''} |")
    lines += ["", "p: two-sided p-value of τ = 0 (scipy.stats.kendalltau)."]
    if few:
        lines += [f"With fewer than {MIN_MODELS} models τ is not meaningful: it can take only a "
                  "few values (±1 for two models) and no ranking of three models is significant."]
    lines += ["", f"Inputs: {', '.join(str(r.path) for r in rows)}", ""]
    text = "\n".join(lines)
    atomic_write(out, lambda handle: handle.write(text), "sharpness report", text=True)
    log.info("wrote %s", out)
    return out


def figure_sharpness(rows: list[ModelRow], taus: dict, options: PlotOptions) -> Figure:
    """One panel per measure: the measure (x) against the loss gap (y), τ in the title."""
    gap = GAPS[0]
    columns = 3
    figure = new_figure(4.8 * columns, 3.6 * math.ceil(len(MEASURES) / columns))
    axes = figure.subplots(math.ceil(len(MEASURES) / columns), columns, squeeze=False).ravel()
    y = np.array([r.values[gap] for r in rows])
    for ax, (measure, error) in zip(axes, MEASURES.items()):
        x = np.array([r.values[measure] for r in rows])
        xerr = np.array([r.values[error] for r in rows]) if error else None
        if xerr is not None and not np.isfinite(xerr).any():
            xerr = None
        ax.errorbar(x, y, xerr=xerr, fmt="o", color="tab:blue", ecolor="0.6", capsize=2)
        finite = x[np.isfinite(x)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for label, xi, yi in zip((r.label for r in rows), x, y):
            if np.isfinite(xi) and np.isfinite(yi):
                right = xi > middle  # label towards the panel's middle, so it stays inside
                text = ax.annotate(label, (xi, yi), textcoords="offset points", fontsize="x-small",
                                   xytext=(-4 if right else 4, 3), ha="right" if right else "left")
                text.set_in_layout(False)  # labels must not squeeze the panels
        if options.log and np.all(x[np.isfinite(x)] > 0):
            ax.set_xscale("log")
        else:  # 0.00025-style ticks collide: small measures get a ×10⁻ⁿ offset
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
        ax.margins(x=0.15, y=0.12)
        ax.set_title(f"{COLUMNS[measure]}: Kendall {taus[measure][gap].describe()}",
                     fontsize="small")
        ax.set_xlabel(COLUMNS[measure])
        ax.set_ylabel(COLUMNS[gap])
    for ax in axes[len(MEASURES):]:
        ax.set_visible(False)
    return figure


def plot_sharpness(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot sharpness``: the table (console, Markdown, CSV) and the scatter figure."""
    rows = read_rows(paths)
    taus = correlations(rows)
    # one column per model: a row per model would not fit a terminal
    print_table("Sharpness versus generalization", ["", *(r.label for r in rows)],
                [(header, *(r.values[key] for r in rows)) for key, header in COLUMNS.items()])
    print_table("Kendall's τ with the generalization gap (p-value)",
                ["measure", *(f"τ vs {COLUMNS[g]}" for g in GAPS), "models"],
                [(COLUMNS[m], *(f"{_cell(by_gap[g].tau) or 'n/a'} (p = {_cell(by_gap[g].p) or 'n/a'})"
                                for g in GAPS), by_gap[GAPS[0]].count)
                 for m, by_gap in taus.items()])
    if len(rows) < MIN_MODELS:
        log.warning(f"Kendall's τ over {len(rows)} models is not meaningful (it can take only a "
                    f"few values); compare at least {MIN_MODELS} models")
    markdown = write_markdown(rows, taus, out.with_suffix(".md"))
    table = write_csv(rows, out.with_suffix(".csv"))
    figure = save_figure(figure_sharpness(rows, taus, options), out, options.fmt)
    return [figure, markdown, table]
