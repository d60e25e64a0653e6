"""Paper Fig. 2 (b, c, e, f): histograms of the final weights and the weight norm over training."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from llv.console import LlvError, log
from llv.plot._figure import PlotOptions, new_figure, run_label, save_figure
from llv.weightstats import WeightStats, compute_weight_stats, load_weight_stats, save_weight_stats


def gather_stats(paths: list[Path]) -> tuple[list[tuple[str, WeightStats]], list[Path]]:
    """Statistics per input: computed (and saved as ``weights.h5``) for run folders, read for files.

    Returns ``(label, stats)`` pairs and the ``weights.h5`` files written.
    """
    labelled, written = [], []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            stats = compute_weight_stats(path)
            saved = save_weight_stats(stats, path / "weights.h5")
            log.info("wrote %s", saved)
            written.append(saved)
            labelled.append((run_label(path), stats))
        elif path.is_file():
            labelled.append((run_label(path), load_weight_stats(path)))
        else:
            raise LlvError(f"file not found: {path} (expected a train run folder or weights.h5)")
    return labelled, written


def figure_weights(labelled: list[tuple[str, WeightStats]], options: PlotOptions) -> Figure:
    """Overlaid histograms of final weights (left) and weight norm per epoch (right)."""
    figure = new_figure(10.0, 4.0)
    ax_hist, ax_norm = figure.subplots(1, 2)
    for label, stats in labelled:
        ax_hist.stairs(stats.hist_counts, stats.hist_edges, label=label, linewidth=1.2)
        ax_norm.plot(stats.epochs, stats.weight_norm, marker=".", label=label)
    what = "weights" if labelled and labelled[0][1].include == "weights" else "parameters"
    ax_hist.set_xlabel(f"{what} of the final model")
    ax_hist.set_ylabel("count")
    if options.log:
        ax_hist.set_yscale("log")
    if options.vmin is not None or options.vmax is not None:
        ax_hist.set_xlim(options.vmin, options.vmax)
    ax_hist.set_title(f"histogram of {what}")
    ax_norm.set_xlabel("epoch")
    ax_norm.set_ylabel(f"‖{what}‖₂")
    ax_norm.set_title(f"{what} norm during training")
    for ax in (ax_hist, ax_norm):
        ax.legend(fontsize="small")
    return figure


def plot_weights(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot weights RUN...``: Fig. 2 of the paper for one or more train runs."""
    labelled, written = gather_stats(paths)
    return [save_figure(figure_weights(labelled, options), out, options.fmt), *written]
