"""Weight statistics of train runs (paper Fig. 2): histogram counts and per-epoch norms by hand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from llv.console import LlvError
from llv.weightstats import (
    compute_weight_stats,
    load_weight_stats,
    save_weight_stats,
    select_weights,
)


@dataclass
class Settings:
    """A non-tensor object in a checkpoint: torch.load(weights_only=True) refuses it."""

    lr: float = 0.1


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),  # weight 4*1*3*3 = 36, bias 4
        torch.nn.BatchNorm2d(4),  # weight 4, bias 4, buffers running_mean/var 4+4, counter
        torch.nn.Flatten(),
        torch.nn.Linear(16, 5),  # weight 80, bias 5
    )


def write_run(folder, epochs=(0, 1, 2, 10), final_format="llv"):
    """A train run: checkpoints/epoch_NNN.pt (llv dicts) and final.pt; returns the state dicts."""
    model = small_model()
    (folder / "checkpoints").mkdir(parents=True)
    states = {}
    for epoch in epochs:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(0.9).add_(0.01 * epoch)
            model[1].running_mean.add_(5.0)  # buffers must not count
        state = {k: v.clone() for k, v in model.state_dict().items()}
        states[epoch] = state
        torch.save(
            {"state_dict": state, "epoch": epoch, "metrics": {"train_loss": 1.0}},
            folder / "checkpoints" / f"epoch_{epoch:03d}.pt",
        )
    final = {k: v * 1.5 for k, v in states[epochs[-1]].items()}
    if final_format == "bare":
        torch.save(final, folder / "final.pt")
    elif final_format == "pickled":
        torch.save({"state_dict": final, "config": Settings()}, folder / "final.pt")
    else:
        torch.save({"state_dict": final, "epoch": epochs[-1]}, folder / "final.pt")
    return states, final


def by_hand(state, names):
    return torch.cat([state[n].reshape(-1).double() for n in names])


WEIGHT_NAMES = ["0.weight", "3.weight"]
ALL_NAMES = ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]


@pytest.mark.parametrize("final_format", ["llv", "bare", "pickled"])
def test_histogram_counts_every_conv_and_fc_weight_once(tmp_path, final_format):
    _, final = write_run(tmp_path / "run", final_format=final_format)
    stats = compute_weight_stats(tmp_path / "run")
    assert stats.num_weights == 36 + 80
    assert int(stats.hist_counts.sum()) == 36 + 80
    assert stats.hist_counts.shape == (100,) and stats.hist_edges.shape == (101,)
    values = by_hand(final, WEIGHT_NAMES).numpy()
    assert stats.hist_edges[0] == values.min() and stats.hist_edges[-1] == values.max()
    expected, _ = np.histogram(values, bins=stats.hist_edges)
    np.testing.assert_array_equal(stats.hist_counts, expected)


def test_norm_per_epoch_is_the_norm_of_the_concatenated_weights(tmp_path):
    states, _ = write_run(tmp_path / "run")
    stats = compute_weight_stats(tmp_path / "run")
    assert stats.epochs.tolist() == [0, 1, 2, 10]
    expected = [
        float(torch.linalg.vector_norm(by_hand(states[e], WEIGHT_NAMES))) for e in (0, 1, 2, 10)
    ]
    np.testing.assert_allclose(stats.weight_norm, expected, rtol=1e-12)


def test_biases_and_batchnorm_are_excluded_by_default_and_included_with_all(tmp_path):
    states, final = write_run(tmp_path / "run")
    assert list(select_weights(final)) == WEIGHT_NAMES
    assert list(select_weights(final, "all")) == ALL_NAMES  # BN running stats are buffers
    stats = compute_weight_stats(tmp_path / "run", include="all")
    assert stats.num_weights == int(stats.hist_counts.sum()) == 36 + 4 + 4 + 4 + 80 + 5
    expected = float(torch.linalg.vector_norm(by_hand(states[2], ALL_NAMES)))
    assert stats.weight_norm[2] == pytest.approx(expected, rel=1e-12)
    assert stats.include == "all"


def test_fixed_range_and_bins(tmp_path):
    _, final = write_run(tmp_path / "run")
    stats = compute_weight_stats(tmp_path / "run", bins=8, range=(-0.1, 0.1))
    np.testing.assert_allclose(stats.hist_edges, np.linspace(-0.1, 0.1, 9))
    values = by_hand(final, WEIGHT_NAMES).numpy()
    assert int(stats.hist_counts.sum()) == int(((values >= -0.1) & (values <= 0.1)).sum())


def test_saved_stats_read_back_equal(tmp_path):
    write_run(tmp_path / "run")
    stats = compute_weight_stats(tmp_path / "run")
    path = save_weight_stats(stats, tmp_path / "run")
    assert path == tmp_path / "run" / "weights.h5"
    back = load_weight_stats(path)
    for name in ("hist_counts", "hist_edges", "epochs", "weight_norm"):
        np.testing.assert_array_equal(getattr(back, name), getattr(stats, name))
    assert (back.num_weights, back.include) == (stats.num_weights, "weights")


def test_last_epoch_stands_in_for_a_missing_final_model(tmp_path):
    states, _ = write_run(tmp_path / "run")
    (tmp_path / "run" / "final.pt").unlink()
    stats = compute_weight_stats(tmp_path / "run")
    values = by_hand(states[10], WEIGHT_NAMES).numpy()
    assert stats.hist_edges[-1] == values.max()


def test_bad_runs_are_one_line_errors(tmp_path):
    with pytest.raises(LlvError, match="not a train run folder"):
        compute_weight_stats(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LlvError, match="no checkpoints"):
        compute_weight_stats(tmp_path / "empty")
    write_run(tmp_path / "run")
    with pytest.raises(LlvError, match="unknown include 'biases'"):
        compute_weight_stats(tmp_path / "run", include="biases")
    torch.save([1, 2, 3], tmp_path / "run" / "final.pt")
    with pytest.raises(LlvError, match="not a state_dict"):
        compute_weight_stats(tmp_path / "run")
    (tmp_path / "text.h5").write_text("no")
    with pytest.raises(LlvError, match="not an HDF5 file"):
        load_weight_stats(tmp_path / "text.h5")
