"""``llv hessian``: eigenvalues, trace and density at the checkpoint; a |λmin/λmax| map with a grid."""

from __future__ import annotations

from llv.config import GridSpec
from llv.console import log
from llv.hessian import FILE, analyse_point, compute_map, report_point, write_point_file
from llv.session import start
from llv.surface import plot_result


def run(cfg):
    """Write ``hessian.h5`` (a point, or ``max_eig``/``min_eig`` over ``grid``); return its path."""
    grid = GridSpec.from_cfg(cfg.grid)
    session = start(cfg, FILE if grid.ndim else None, checkpoint=cfg.get("checkpoint") or None)
    try:
        if grid.ndim:
            file = compute_map(session, grid)
            plot_result(session, file, "hessian")
            return file.path if file is not None else None
        if not session.is_root:
            return None
        result = analyse_point(session)
        path = write_point_file(session, result, session.run_dir / FILE)
        report_point(result)
        log.info(f"wrote {path}")
        if cfg.get("plot", True):
            try:
                from llv.plot import make_plot

                make_plot("spectrum", [str(path)])
            except Exception as exc:  # results are saved; a figure problem is only a warning
                log.warning(f"could not draw the spectrum plot: {' '.join(str(exc).split())}")
        return path
    finally:
        session.close()
