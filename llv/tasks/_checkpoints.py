"""The config side of checkpoints: which checkpoint a command uses, and what a checkpoint records.

:mod:`llv.checkpoint` takes plain values only; this module turns a composed config into them.
"""

from __future__ import annotations

from pathlib import Path

from llv.checkpoint import latest_trained


def run_config(cfg) -> dict:
    """The composed config as plain, resolved dicts and lists (what a checkpoint stores)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return dict(cfg)


def default_checkpoint(cfg) -> Path:
    """``cfg.checkpoint``, else ``<outputs>/train/latest/final.pt`` if trained for this model.

    Raises:
        LlvError: No checkpoint was given and the latest training run is missing, unfinished or
            was trained for another model or data set.
    """
    from omegaconf import OmegaConf

    given = OmegaConf.select(cfg, "checkpoint", default=None)
    if given:
        return Path(str(given))
    return latest_trained(OmegaConf.select(cfg, "outputs", default=None),
                          OmegaConf.select(cfg, "model.name", default=None),
                          OmegaConf.select(cfg, "dataset.name", default=None))
