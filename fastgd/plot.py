"""Pictures of gradient descent (matplotlib, the optional ``fastgd[plot]`` extra).

Every function takes plain data (a *record*: a dict, or any object with the named fields,
such as a dataclass) and an optional matplotlib ``Axes``; without one it makes a new figure
(through pyplot, so that notebooks and interactive sessions show it) and returns the axes it
drew on. This module imports nothing of fastgd's (the results' ``plot`` methods pass their
fields here), and matplotlib only inside the functions, never when fastgd is imported;
without a display (and no ``MPLBACKEND``) pyplot is set to the Agg backend.

- :func:`plot_fit`: one run's loss curve (``FitResult``);
- :func:`plot_sweep`: every run of a sweep on one axes, log scale, diverged runs dashed
  and ended with a cross;
- :func:`plot_learning_rate_finder`: the objective against the rate (log–log), the
  suggested rate marked;
- :func:`plot_loss_surface`: for problems with one or two parameters, the loss curve or
  contours with the path of the weights (the "bowl" picture);
- :func:`playground_figure`: the command line's report, all of the above on one figure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "figure_to_png",
    "playground_figure",
    "plot_fit",
    "plot_learning_rate_finder",
    "plot_loss_surface",
    "plot_sweep",
]

INSTALL_HINT = 'pip install "fastgd[plot]"'
#: Colour of diverged runs' crosses and of the suggestion's marker.
DIVERGED_MARKER = "x"
#: On a log axis an exact 0 (a loss driven to zero, a perfect fit) is drawn this many times
#: below the smallest positive value shown, a decade under everything else, and the axis
#: label says so; the axis stays logarithmic (a linear one would flatten every curve).
ZERO_FLOOR_DIVISOR = 10.0


def _matplotlib():
    """Import matplotlib, or say how to install it."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            f"fastgd's plots need matplotlib, which is not installed: {INSTALL_HINT} "
            '(or pip install "matplotlib>=3.7").'
        ) from error
    return matplotlib


def _pyplot():
    """pyplot, on the Agg backend when there is no display and no backend was chosen."""
    matplotlib = _matplotlib()
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if headless and "MPLBACKEND" not in os.environ and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes(ax):
    if ax is not None:
        _matplotlib()
        return ax
    _, ax = _pyplot().subplots(figsize=(7, 4.5))
    return ax


def _field(record, name: str):
    """A field of a plain record: a mapping's key, else the object's attribute."""
    return record[name] if isinstance(record, Mapping) else getattr(record, name)


def _diverged_crosses(ax, x, **style) -> None:
    """Crosses at ``x`` near the top of the axes (for runs with no finite value to show)."""
    style = {**style, "linestyle": "none"}
    ax.plot(x, np.full(len(x), 0.97), marker=DIVERGED_MARKER, transform=ax.get_xaxis_transform(),
            **style)  # fmt: skip


def _finish(ax, xlabel: str, title: str, floor: float | None = None, **legend):
    """The labels, the title and the legend every picture ends with; returns the axes.
    ``floor``: that of the log y axis (see :func:`_log_floor`), named in its label."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"loss (objective{_floor_note(floor)})")
    ax.set_title(title)
    ax.legend(**legend)
    return ax


def _log_floor(*values) -> float | None:
    """How a log axis shows these values (NaN and inf left out): None when it cannot (a
    negative value, or no positive one: the axis stays linear); 0.0 when every value is
    positive; else the floor an exact 0 is drawn at, the smallest positive value divided
    by ``ZERO_FLOOR_DIVISOR``."""
    flat = np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in values])
    finite = flat[np.isfinite(flat)]
    positive = finite[finite > 0]
    if not positive.size or (finite < 0).any():
        return None
    return 0.0 if positive.size == finite.size else float(positive.min()) / ZERO_FLOOR_DIVISOR


def _clipped(values, floor: float | None) -> np.ndarray:
    """``values`` as the axis shows them: zeros raised to the log axis's floor."""
    values = np.asarray(values, dtype=np.float64)
    if not floor:
        return values
    return np.where(values < floor, floor, values)  # NaN stays NaN


def _floor_note(floor: float | None) -> str:
    return f"; 0 drawn at {floor:.2g}" if floor else ""


def _log_scale(ax, floor: float | None, axis: str = "y") -> None:
    """A log axis unless ``floor`` is None (see :func:`_log_floor`)."""
    if floor is not None:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def plot_fit(result, ax=None):
    """One run's loss curve: the objective per epoch, on a log scale unless a value is
    negative (an exact 0 is drawn a decade below the smallest positive value; the axis
    label says where).

    ``result`` is a record (a ``FitResult``, or a dict) with the fields ``loss_history``
    (one value per epoch), ``loss`` (its name), ``learning_rate``, ``converged`` and
    ``n_iter``; ``ax`` a matplotlib Axes or None. Returns the axes drawn on.
    """
    ax = _axes(ax)
    history = np.asarray(_field(result, "loss_history"), dtype=np.float64)
    epochs = np.arange(1, history.shape[0] + 1)
    label = f"{_field(result, 'loss')}, step {_field(result, 'learning_rate'):.3g}"
    floor = _log_floor(history)
    ax.plot(epochs, _clipped(history, floor), marker="o", markersize=3, label=label)
    _log_scale(ax, floor)
    status = "converged" if _field(result, "converged") else "stopped"
    final = f"{history[-1]:.4g}" if history.size else "—"
    title = f"loss curve: {_field(result, 'n_iter')} epochs, {status}, final loss {final}"
    return _finish(ax, "epoch", title, floor)


def plot_sweep(runs, ax=None):
    """Every run's loss curve on one axes (log y unless a value is negative; exact zeros
    are drawn at a floor the axis label names).

    The colour encodes the learning rate (darker is smaller), the line style the strategy
    and batch size. Diverged runs are thin, labelled ``(diverged)`` and end with a cross
    at their last finished epoch; a run that diverged in its first epoch has only the
    cross, at epoch 1 at the top of the axes. One labelled series per run, in order.

    ``runs`` is a sequence of records (a ``SweepResult``'s runs, or dicts) with the fields
    ``label``, ``step`` (the step size), ``strategy``, ``batch_size``, ``diverged`` and
    ``loss_history``; ``ax`` a matplotlib Axes or None. Returns the axes drawn on.
    """
    matplotlib = _matplotlib()
    ax = _axes(ax)
    runs = list(runs)
    curves = [np.asarray(_field(run, "loss_history"), dtype=np.float64) for run in runs]
    floor = _log_floor(np.empty(0), *curves)
    steps = [_field(run, "step") for run in runs]
    rates = sorted({step for step in steps if np.isfinite(step)})
    colormap = matplotlib.colormaps["plasma"]
    kinds = [(_field(run, "strategy"), _field(run, "batch_size")) for run in runs]
    groups = list(dict.fromkeys(kinds))
    styles = ["-", "--", ":", "-."]
    for run, curve, step, kind in zip(runs, curves, steps, kinds, strict=True):
        position = rates.index(step) / max(len(rates) - 1, 1) if step in rates else 0
        style = dict(
            color=colormap(0.85 * position),
            linestyle=styles[groups.index(kind) % len(styles)],
            label=_field(run, "label"),
        )
        _plot_run(ax, _clipped(curve, floor), bool(_field(run, "diverged")), style)
    _log_scale(ax, floor)
    title = "learning-rate sweep: loss curves"
    return _finish(ax, "epoch", title, floor, fontsize="x-small", ncol=2 if len(runs) > 8 else 1)


def _plot_run(ax, curve: np.ndarray, diverged: bool, style: dict) -> None:
    """One sweep run's curve; a diverged one thin and ended with a cross (only the cross,
    at epoch 1, when no epoch finished)."""
    epochs = np.arange(1, curve.shape[0] + 1)
    if not diverged:
        ax.plot(epochs, curve, **style)
        return
    style["label"] = f"{style['label']} (diverged)"
    if not curve.size:
        _diverged_crosses(ax, [1], markersize=9, **style)
        return
    ax.plot(
        epochs,
        curve,
        linewidth=0.8,
        marker=DIVERGED_MARKER,
        markevery=[curve.size - 1],
        markersize=9,
        **style,
    )


def _interpolate_log(rates: np.ndarray, losses: np.ndarray, rate: float) -> float:
    finite = np.isfinite(losses) & (losses > 0)
    if not finite.any():
        return float("nan")
    return float(np.exp(np.interp(np.log(rate), np.log(rates[finite]), np.log(losses[finite]))))


def plot_learning_rate_finder(finder, ax=None):
    """The learning-rate range test: the objective after each short run against its rate
    (log–log), the suggested rate marked with a vertical line and a star, ``auto``'s step
    with a dotted line, diverged rates with crosses at the top.

    ``finder`` is a record (a ``LearningRateFinder``, or a dict) with the fields
    ``learning_rates`` and ``losses`` (``inf`` where a rate diverged), ``epochs``,
    ``start_loss``, ``suggestion``, ``auto_rate`` and ``strategy``; ``ax`` a matplotlib
    Axes or None. Returns the axes drawn on.
    """
    ax = _axes(ax)
    rates = np.asarray(_field(finder, "learning_rates"), dtype=np.float64)
    losses = np.asarray(_field(finder, "losses"), dtype=np.float64)
    suggestion, auto_rate = _field(finder, "suggestion"), _field(finder, "auto_rate")
    finite = np.isfinite(losses)
    start = _field(finder, "start_loss")
    floor = _log_floor(losses, start)
    shown = _clipped(losses, floor)
    label = f"objective after {_field(finder, 'epochs')} epochs"
    ax.plot(rates[finite], shown[finite], marker=".", label=label)
    if (~finite).any():
        _diverged_crosses(ax, rates[~finite], color="red", label="diverged")
    ax.axhline(_clipped(start, floor), color="grey", linewidth=0.8, label="starting objective")
    ax.axvline(suggestion, color="green", linestyle="--", label=f"suggested {suggestion:.3g}")
    ax.plot(
        [suggestion],
        [_interpolate_log(rates, shown, suggestion)],
        marker="*",
        markersize=14,
        color="green",
        linestyle="none",
    )
    ax.axvline(auto_rate, color="purple", linestyle=":", label=f"auto {auto_rate:.3g}")
    ax.set_xscale("log")
    _log_scale(ax, floor)
    title = f"learning-rate finder ({_field(finder, 'strategy')})"
    return _finish(ax, "learning rate", title, floor, fontsize="small")


def plot_loss_surface(paths, ax=None, *, resolution: int = 80, margin: float = 0.3):
    """The loss surface with the path of the weights: the "bowl" picture.

    For two parameters (one feature and the intercept, or two features without it):
    contours of the objective (log-spaced levels) and each path as a line of points from
    its start (a circle) to its end (a square). For one parameter: the objective as a
    curve and each path's points on it. The surface is the objective on the same sample
    the path ran on, over the box around the paths (and the lowest point of the first
    path), widened by ``margin``.

    Parameters
    ----------
    paths : record or sequence of records
        Paths of the same problem (e.g. several learning rates): ``DescentPath`` objects or
        dicts with the fields ``points`` (n_points, n_parameters), ``losses``,
        ``parameter_names``, ``strategy``, ``learning_rate``, ``step``, ``diverged`` and
        ``objective`` (a function from points (m, n_parameters) to their m objectives).
    ax : matplotlib Axes, optional
    resolution : int
        Grid points per axis.
    margin : float
        How far the box reaches beyond the paths, as a fraction of its size.

    Returns
    -------
    matplotlib Axes
    """
    if isinstance(paths, Mapping) or hasattr(paths, "points"):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("plot_loss_surface needs at least one path.")
    ax = _axes(ax)
    first = paths[0]
    all_points = [np.asarray(_field(path, "points"), dtype=np.float64) for path in paths]
    finite = np.concatenate([points[np.all(np.isfinite(points), axis=1)] for points in all_points])
    low, high = finite.min(axis=0), finite.max(axis=0)
    span = np.where(high - low > 0, high - low, np.maximum(np.abs(high), 1.0))
    low, high = low - margin * span, high + margin * span
    names = _field(first, "parameter_names")
    n_parameters = all_points[0].shape[1]
    floor = _draw_surface(ax, paths, low, high, resolution, n_parameters)
    if n_parameters == 2:
        ax.set_ylabel(names[1])
    for path, points in zip(paths, all_points, strict=True):
        _draw_path(ax, path, points, floor)
    ax.set_xlim(low[0], high[0])
    if n_parameters == 1:
        _log_scale(ax, floor)
        title = "loss surface and the path of the weights"
        _finish(ax, names[0], title, floor, fontsize="small")
    else:
        ax.set_ylim(low[1], high[1])
        ax.set_xlabel(names[0])
        ax.set_title("loss surface and the path of the weights")
        ax.legend(fontsize="small")
    return ax


def _draw_surface(ax, paths, low, high, resolution: int, n_parameters: int) -> float | None:
    """The first path's objective over the box ``low..high``: a curve (one parameter; returns
    the log axis's floor for the curve and the paths' losses, see :func:`_log_floor`) or
    contours (log-spaced levels, from the floor when the surface reaches 0; returns None)."""
    objective = _field(paths[0], "objective")
    if n_parameters == 1:
        grid = np.linspace(low[0], high[0], resolution * 4)
        curve = objective(grid[:, None])
        floor = _log_floor(curve, *(_field(path, "losses") for path in paths))
        ax.plot(grid, _clipped(curve, floor), color="black", linewidth=1, label="objective")
        return floor
    mesh_x, mesh_y = np.meshgrid(
        np.linspace(low[0], high[0], resolution), np.linspace(low[1], high[1], resolution)
    )
    surface = objective(np.column_stack([mesh_x.ravel(), mesh_y.ravel()])).reshape(mesh_x.shape)
    floor, top = _log_floor(surface), float(surface.max())
    bottom = float(surface.min()) if floor is None else max(float(surface.min()), floor)
    if floor is not None and top > bottom:
        levels = np.geomspace(bottom, top, 20)
    else:
        levels = np.linspace(bottom, top, 20)
    # extend="min": the region below the lowest level (a 0 under the floor) is filled too
    ax.contourf(mesh_x, mesh_y, surface, levels=levels, cmap="viridis", alpha=0.5, extend="min")
    ax.contour(mesh_x, mesh_y, surface, levels=levels, colors="k", linewidths=0.4)
    return None


def _draw_path(ax, path, points: np.ndarray, floor: float | None = None) -> None:
    """One path: its points joined, the start a circle, the end a square. With one
    parameter, the points stand on the loss curve (their losses as heights, zeros at the
    log axis's ``floor``)."""
    rate = "auto" if _field(path, "learning_rate") == "auto" else "lr"
    label = f"{_field(path, 'strategy')}, {rate} {_field(path, 'step'):.3g}"
    if _field(path, "diverged"):
        label += " (diverged)"
    if points.shape[1] == 1:
        heights = _clipped(_field(path, "losses"), floor)
        (line,) = ax.plot(points[:, 0], heights, marker="o", markersize=4, label=label)
    else:
        heights = points[:, 1]
        (line,) = ax.plot(points[:, 0], heights, marker="o", markersize=3, label=label)
    color = line.get_color()
    ax.plot(points[:1, 0], heights[:1], marker="o", markersize=9, color=color,
            markerfacecolor="none", linestyle="none")  # fmt: skip
    ax.plot(points[-1:, 0], heights[-1:], marker="s", markersize=8, color=color,
            linestyle="none")  # fmt: skip


def playground_figure(sweep_result, finder=None, paths: Sequence = ()):
    """The command line's report: the sweep's curves, the finder, and the loss surface
    (when ``paths`` are given) side by side on one figure, made without pyplot (nothing is
    shown or kept in pyplot's figure list).

    Returns
    -------
    matplotlib Figure
    """
    _matplotlib()
    from matplotlib.figure import Figure

    panels = 1 + (finder is not None) + bool(paths)
    figure = Figure(figsize=(7 * panels, 5.5), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    plot_sweep(sweep_result, ax=axes[0])
    if finder is not None:
        plot_learning_rate_finder(finder, ax=axes[1])
    if paths:
        plot_loss_surface(paths, ax=axes[-1])
    return figure


def figure_to_png(figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for embedding in HTML)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
