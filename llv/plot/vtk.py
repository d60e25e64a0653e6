"""ParaView files: a 2-D surface as VTK XML PolyData (``.vtp``, ASCII) for any grid shape.

Points are the grid nodes (x = α, y = β, z = the height metric, ``--metric``, default the
training loss) in row-major order, index ``iy * nx + ix``; cells are the quads between
neighbouring nodes, ``(nx - 1)(ny - 1)`` of them on a full grid.

Point arrays: the height first (the active scalars; clipped at ``--vmin/--vmax``, ln(z + 0.1)
with ``--log``, as the reference's ``h52vtp.py``), then every stored metric as it is (losses and
accuracies of every split; an ensemble's median, plus ``<metric>_se``, the standard error over its
members), then ``valid``: 1 where the node was computed, 0 where it was not (a partial run).

Missing nodes keep their place so indices stay regular, but no quad uses them. ASCII files must
not hold NaN (VTK before 9.3, as in ParaView 5.11, cannot parse it), so a missing node sits at
the *lowest* height of the surface and its values repeat their array's lowest value: filter on
``valid`` (ParaView: Threshold, valid >= 1) to drop them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llv.console import LlvError, log
from llv.fsio import atomic_write
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
        f'        <DataArray type="{dtype}" Name="{_xml_name(name)}" NumberOfComponents="{components}" '
        f'format="ascii"{span}>\n{_numbers(flat, per_line, fmt)}\n        </DataArray>\n'
    )


def _xml_name(name: str) -> str:
    return name.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _filled(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``values`` with the missing nodes (and any other non-finite value) at the lowest finite
    value, so that the ASCII file holds no NaN."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values) & valid
    low = values[finite].min() if finite.any() else 0.0
    return np.where(finite, values, low)


def point_arrays(surface: Surface, metric: str, options: PlotOptions) -> tuple[str, dict[str, np.ndarray], np.ndarray]:
    """``(height name, name -> (ny, nx) values, valid mask)`` of a 2-D surface.

    The height comes first; every metric of the file follows, losses then accuracies, train
    before test (each ensemble metric also as
    ``<name>_se``); ``valid`` is True where the node was computed (``done``) and its height is finite.
    """
    z, _ = height(surface.grid(metric), options)
    done = surface.done if surface.done is not None else np.ones(z.shape, dtype=bool)
    valid = np.asarray(done, dtype=bool).reshape(z.shape) & np.isfinite(z)
    name = f"ln({metric}+0.1)" if options.log else metric
    arrays = {name: z}
    ordered = surface.metrics("loss") + surface.metrics("acc")  # train before test
    for other in ordered + [n for n in surface.values if n not in ordered]:
        values = surface.grid(other)
        if np.shape(values) != z.shape:
            continue
        arrays.setdefault(other, np.asarray(values, dtype=float))
        members = surface.members(other)
        if members is not None and len(members) > 1:
            arrays[f"{other}_se"] = standard_error(members)
    return name, arrays, valid


def standard_error(members: np.ndarray) -> np.ndarray:
    """Standard error of the mean over an ensemble's members (axis 0), ignoring missing ones.

    >>> standard_error(np.array([[1.0, 2.0], [3.0, 2.0]])).tolist()
    [1.0, 0.0]
    """
    with np.errstate(all="ignore"):
        count = np.isfinite(members).sum(axis=0)
        spread = np.nanstd(members, axis=0, ddof=1)
        return np.where(count > 1, spread / np.sqrt(np.maximum(count, 1)), np.nan)


def surface_vtp(surface: Surface, options: PlotOptions, metric: str | None = None) -> str:
    """The ``.vtp`` text of one 2-D surface: z = ``metric`` (default: ``--metric``, else the
    training loss), every metric as a point array, and the ``valid`` mask."""
    require_2d(surface, "vtk")
    metric = metric or getattr(options, "metric", None) or surface.default_metric()
    ny, nx = surface.grid_shape
    if nx < 2 or ny < 2:
        raise LlvError(f"'vtk' needs at least 2 x 2 points, {surface.path} has {nx} x {ny}")
    name, arrays, valid = point_arrays(surface, metric, options)
    if not valid.any():
        raise LlvError(f"{surface.path}: '{metric}' has no finite values")
    z = _filled(arrays[name], valid)  # missing nodes at the lowest height, unused by quads
    xx, yy = np.meshgrid(surface.x, surface.y)
    points = np.stack([xx.ravel(), yy.ravel(), z.ravel()], axis=1)
    quads = grid_quads(nx, ny)
    quads = quads[valid.ravel()[quads].all(axis=1)]
    point_data = "".join(_data_array(key, "Float64", _filled(values, valid)) for key, values in arrays.items())
    point_data += _data_array("valid", "UInt8", valid.astype(np.uint8), per_line=20, fmt="{:d}")
    body = [
        '<?xml version="1.0"?>\n',
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n',
        "  <PolyData>\n",
        f'    <Piece NumberOfPoints="{nx * ny}" NumberOfVerts="0" NumberOfLines="0" '
        f'NumberOfStrips="0" NumberOfPolys="{len(quads)}">\n',
        f'      <PointData Scalars="{_xml_name(name)}">\n',
        point_data,
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
    if out.suffix.lower() != ".vtp":
        raise LlvError(f"--out {out}: 'llv plot vtk' writes a .vtp file; give --out a name ending in .vtp")
    text = surface_vtp(load_surface(path), options)
    atomic_write(out, lambda handle: handle.write(text), "VTK file", text=True)
    log.info("wrote %s", out)
    return [out]
