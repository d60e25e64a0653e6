"""Pre-flight checks before a grid run (``probe=true|false|strict``): is the picture trustworthy?

At most two centre evaluations: the centre twice must give identical numbers (else the forward
pass is random: dropout active in eval, augmentation or shuffling in the data); the centre loss is
compared with the checkpoint's recorded metrics when they exist; the directions must have the
norms their declared normalization promises; x and y should not be parallel. After the run the
engine checks that θ is bit-identical. A failed check warns (``probe=strict``: stops).
"""

from __future__ import annotations

import torch

from llv.console import LlvError, log, print_table
from llv.direction import Directions
from llv.params import ParameterSpace

_RTOL = 1e-4


def direction_norm_problems(directions: Directions, values: list[torch.Tensor]) -> list[str]:
    """Tensors whose norms break the declared ``norm``/``ignore`` (empty when all keep the promise)."""
    norm, ignore = directions.attrs.get("norm"), directions.attrs.get("ignore")
    if directions.attrs.get("kind", "random") not in ("random", "file"):
        return []  # θB − θA, PCA, Hessian and plane directions promise no normalization
    problems = []
    for a, axis in enumerate(directions.axes):
        for name, d, w in zip(directions.space.names, axis, values):
            if not w.is_floating_point():
                continue
            w = w.to(torch.float32)
            if w.dim() <= 1:
                nonzero = d.numel() > 0 and bool(d.abs().max() > 0)
                if ignore == "biasbn" and nonzero:
                    problems.append(f"axis {a} {name}: not zero (ignore=biasbn)")
                elif ignore == "none" and not torch.allclose(d, w, rtol=_RTOL, atol=1e-7):
                    problems.append(f"axis {a} {name}: not equal to theta (ignore=none)")
                continue
            wanted, got = _promised(norm, d, w)
            if wanted is not None and not torch.allclose(got, wanted, rtol=_RTOL, atol=1e-6):
                problems.append(f"axis {a} {name}: norms do not match norm={norm}")
    return problems


def _promised(norm, d, w):
    dims = tuple(range(1, d.dim()))
    filters = lambda t: torch.linalg.vector_norm(t, dim=dims)  # noqa: E731
    if norm == "filter":
        return filters(w), filters(d)
    if norm == "layer":
        return w.norm(), d.norm()
    if norm == "dfilter":
        return torch.ones(d.shape[0]), filters(d)
    if norm == "dlayer":
        return torch.tensor(1.0), d.norm()
    return None, None  # weight / none / unknown: nothing to check without the raw draw


def run_probe(evaluator, directions: Directions, space: ParameterSpace, values: list[torch.Tensor],
              checkpoint_meta: dict, splits: list[str], max_samples, mode: str = "true") -> dict:
    """The checks; returns ``probe_*`` attrs. Warns on failures (raises with ``mode="strict"``)."""
    if str(mode).lower() in ("false", "0", "off", "none"):
        return {}
    centre = torch.zeros(1, directions.flat().shape[0])
    first = {k: float(v[0]) for k, v in evaluator.evaluate(centre).items()}
    second = {k: float(v[0]) for k, v in evaluator.evaluate(centre).items()}
    rows, failures = [], []
    repeatable = all(first[k] == second[k] or (first[k] != first[k] and second[k] != second[k]) for k in first)
    rows.append(("centre evaluated twice is identical", "yes" if repeatable else "NO"))
    if not repeatable:
        failures.append("the centre evaluated twice differs: the forward pass is random "
                        "(dropout active in eval mode? augmentation in the evaluation data?)")
    recorded = (checkpoint_meta or {}).get("metrics") or {}
    for split in splits:
        key = f"{split}_loss"
        if key in recorded and max_samples is None:
            stored, now = float(recorded[key]), first[key]
            tolerance, within = 1e-3 * max(abs(stored), 1e-12), ""
            if f"{split}_n" in first:  # fast mode: an estimate on a subset, judged by its s.e.
                tolerance += 3 * first[f"{split}_loss_se"]
                within = f" ± {3 * first[f'{split}_loss_se']:.3g} (3 s.e., fast mode)"
            agree = abs(stored - now) <= tolerance
            rows.append((f"centre {key} vs checkpoint's", f"{now:.6g}{within} vs {stored:.6g}"))
            if not agree:
                failures.append(f"centre {key} {now:.6g}{within} differs from the checkpoint's recorded "
                                f"{stored:.6g}")
    problems = direction_norm_problems(directions, values)
    rows.append((f"directions keep norm={directions.attrs.get('norm')}", "yes" if not problems else "NO"))
    if problems:
        failures.append(f"directions do not have the norms of norm={directions.attrs.get('norm')}: {problems[0]}"
                        + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    cosine = None
    flat = directions.flat().double()
    if directions.ndim == 2:
        x, y = flat[0], flat[1]
        cosine = float(x @ y / (x.norm() * y.norm()).clamp_min(1e-300))
        rows.append(("cosine(x, y)", f"{cosine:.3g}"))
        if abs(cosine) > 0.9:
            failures.append(f"x and y are nearly parallel (cosine {cosine:.3f})")
    print_table("pre-flight probe", ["check", "result"], rows)
    for message in failures:
        if str(mode).lower() == "strict":
            raise LlvError(f"probe failed: {message}")
        log.warning(f"probe: {message}")
    return {"probe_repeatable": bool(repeatable), "probe_direction_norms_ok": not problems,
            "probe_cosine_xy": cosine if cosine is not None else float("nan"),
            "probe_failures": len(failures), "probe_messages": " | ".join(failures)}
