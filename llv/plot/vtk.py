"""ParaView files: a 2-D surface as VTK XML PolyData (``.vtp``, ASCII) for any grid shape.

Points are the grid nodes (x = α, y = β, z = loss) in row-major order, index ``iy * nx + ix``;
cells are the quads between neighbouring nodes, ``(nx - 1)(ny - 1)`` of them on a full grid.
Nodes without a value (NaN) keep their place so indices stay regular, but no quad uses them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llv.console import LlvError, log
from llv.plot._figure import PlotOptions
from llv.plot.io import Surface, load_surface
from llv.plot.surface import height, require_2d


def grid_quads(nx: int, ny: int) -> np.ndarray:
    """Corner indices (counter-clockwise) of the (nx - 1)(ny - 1) quads of an nx x ny grid.

    >>> grid_quads(3, 2).tolist()
    [[0, 1, 4, 3], [1, 2, 5, 4]]
    """
    iy, ix = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    first = (iy * nx + ix).ravel()
    return np.stack([first, first + 1, first + nx + 1, first + nx], axis=1)


def _numbers(values: np.ndarray, per_line: int, fmt: str = "{:.17g}") -> str:
    flat = np.asarray(values).ravel()
    lines = []
    for start in range(0, flat.size, per_line):
        lines.append("          " + " ".join(fmt.format(v) for v in flat[start : start + per_line]))
    return "\n".join(lines)


def _data_array(
    name: str,
    dtype: str,
    values: np.ndarray,
    components: int = 1,
    per_line: int = 6,
    fmt: str = "{:.17g}",
) -> str:
    flat = np.asarray(values).ravel()
    span = ""
    if flat.size:
        span = f' RangeMin="{fmt.format(flat.min())}" RangeMax="{fmt.format(flat.max())}"'
    return (
        f'        <DataArray type="{dtype}" Name="{name}" NumberOfComponents="{components}" '
        f'format="ascii"{span}>\n{_numbers(flat, per_line, fmt)}\n        </DataArray>\n'
    )


def surface_vtp(surface: Surface, options: PlotOptions, metric: str | None = None) -> str:
    """The ``.vtp`` text of one 2-D surface: z = loss (clipped at ``--vmax``, ln(z+0.1) with ``--log``)."""
    require_2d(surface, "vtk")
    metric = metric or surface.default_metric()
    z, _ = height(surface.grid(metric), options)
    ny, nx = z.shape
    if nx < 2 or ny < 2:
        raise LlvError(f"'vtk' needs at least 2 x 2 points, {surface.path} has {nx} x {ny}")
    valid = np.isfinite(z)
    if not valid.any():
        raise LlvError(f"{surface.path}: '{metric}' has no finite values")
    # VTK's ASCII reader cannot parse NaN: missing nodes sit at the highest height, unused.
    z = np.where(valid, z, z[valid].max())
    xx, yy = np.meshgrid(surface.x, surface.y)
    points = np.stack([xx.ravel(), yy.ravel(), z.ravel()], axis=1)
    quads = grid_quads(nx, ny)
    quads = quads[valid.ravel()[quads].all(axis=1)]
    name = metric if not options.log else f"ln({metric}+0.1)"
    body = [
        '<?xml version="1.0"?>\n',
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n',
        "  <PolyData>\n",
        f'    <Piece NumberOfPoints="{nx * ny}" NumberOfVerts="0" NumberOfLines="0" '
        f'NumberOfStrips="0" NumberOfPolys="{len(quads)}">\n',
        f'      <PointData Scalars="{name}">\n',
        _data_array(name, "Float64", z),
        "      </PointData>\n",
        "      <Points>\n",
        _data_array("Points", "Float64", points, components=3, per_line=6),
        "      </Points>\n",
        "      <Polys>\n",
        _data_array("connectivity", "Int64", quads, per_line=8, fmt="{:d}"),
        _data_array("offsets", "Int64", 4 * np.arange(1, len(quads) + 1), per_line=8, fmt="{:d}"),
        "      </Polys>\n",
        "    </Piece>\n",
        "  </PolyData>\n",
        "</VTKFile>\n",
    ]
    return "".join(body)


def plot_vtk(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot vtk``: write the surface as a ParaView ``.vtp`` file."""
    (path,) = paths
    text = surface_vtp(load_surface(path), options)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log.info("wrote %s", out)
    return [out]
