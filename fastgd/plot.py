"""Pictures of gradient descent (matplotlib, the optional ``fastgd[plot]`` extra).

Every function takes the object to draw and an optional matplotlib ``Axes``; without one it
makes a new figure (through pyplot, so that notebooks and interactive sessions show it) and
returns the axes it drew on. matplotlib is imported inside the functions, never when fastgd
is imported; without a display (and no ``MPLBACKEND``) pyplot is set to the Agg backend.

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
from collections.abc import Sequence

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


def _log_scale_if_positive(ax, values: np.ndarray, axis: str = "y") -> None:
    finite = values[np.isfinite(values)]
    if finite.size and (finite > 0).all():
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def plot_fit(result, ax=None):
    """One run's loss curve: the objective per epoch, log scale when positive.

    Parameters
    ----------
    result : FitResult
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    history = np.asarray(result.loss_history, dtype=np.float64)
    epochs = np.arange(1, history.shape[0] + 1)
    label = f"{result.loss}, step {result.learning_rate:.3g}"
    ax.plot(epochs, history, marker="o", markersize=3, label=label)
    _log_scale_if_positive(ax, history)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (objective)")
    status = "converged" if result.converged else "stopped"
    final = f"{history[-1]:.4g}" if history.size else "—"
    ax.set_title(f"loss curve: {result.n_iter} epochs, {status}, final loss {final}")
    ax.legend()
    return ax


def plot_sweep(sweep_result, ax=None):
    """Every run's loss curve on one axes (log y when all values are positive).

    The colour encodes the learning rate (darker is smaller), the line style the strategy
    and batch size. Diverged runs are thin, labelled ``(diverged)`` and end with a cross
    at their last finished epoch; a run that diverged in its first epoch has only the
    cross, at epoch 1 at the top of the axes. One labelled series per run, in the sweep's
    order.

    Parameters
    ----------
    sweep_result : SweepResult
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    matplotlib = _matplotlib()
    ax = _axes(ax)
    runs = list(sweep_result)
    curves = [np.asarray(run.loss_history, dtype=np.float64) for run in runs]
    values = np.concatenate(curves) if curves else np.empty(0)
    rates = sorted({run.step for run in runs if np.isfinite(run.step)})
    colormap = matplotlib.colormaps["plasma"]
    groups = list(dict.fromkeys((run.strategy, run.batch_size) for run in runs))
    styles = ["-", "--", ":", "-."]
    for run, curve in zip(runs, curves, strict=True):
        position = rates.index(run.step) / max(len(rates) - 1, 1) if run.step in rates else 0
        color = colormap(0.85 * position)
        style = styles[groups.index((run.strategy, run.batch_size)) % len(styles)]
        epochs = np.arange(1, curve.shape[0] + 1)
        if not run.diverged:
            ax.plot(epochs, curve, color=color, linestyle=style, label=run.label)
            continue
        label = f"{run.label} (diverged)"
        if curve.size:
            ax.plot(
                epochs,
                curve,
                color=color,
                linestyle=style,
                linewidth=0.8,
                label=label,
                marker=DIVERGED_MARKER,
                markevery=[curve.size - 1],
                markersize=9,
            )
        else:
            ax.plot(
                [1],
                [0.97],
                marker=DIVERGED_MARKER,
                markersize=9,
                linestyle="none",
                color=color,
                label=label,
                transform=ax.get_xaxis_transform(),
            )
    _log_scale_if_positive(ax, values)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (objective)")
    ax.set_title("learning-rate sweep: loss curves")
    ax.legend(fontsize="x-small", ncol=2 if len(runs) > 8 else 1)
    return ax


def _interpolate_log(rates: np.ndarray, losses: np.ndarray, rate: float) -> float:
    finite = np.isfinite(losses) & (losses > 0)
    if not finite.any():
        return float("nan")
    return float(np.exp(np.interp(np.log(rate), np.log(rates[finite]), np.log(losses[finite]))))


def plot_learning_rate_finder(finder, ax=None):
    """The learning-rate range test: the objective after each short run against its rate
    (log–log), the suggested rate marked with a vertical line and a star, ``auto``'s step
    with a dotted line, diverged rates with crosses at the top.

    Parameters
    ----------
    finder : LearningRateFinder
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    rates = np.asarray(finder.learning_rates, dtype=np.float64)
    losses = np.asarray(finder.losses, dtype=np.float64)
    finite = np.isfinite(losses)
    ax.plot(
        rates[finite], losses[finite], marker=".", label=f"objective after {finder.epochs} epochs"
    )
    if (~finite).any():
        ax.plot(
            rates[~finite],
            np.full((~finite).sum(), 0.97),
            marker=DIVERGED_MARKER,
            linestyle="none",
            color="red",
            label="diverged",
            transform=ax.get_xaxis_transform(),
        )
    ax.axhline(finder.start_loss, color="grey", linewidth=0.8, label="starting objective")
    ax.axvline(
        finder.suggestion, color="green", linestyle="--", label=f"suggested {finder.suggestion:.3g}"
    )
    ax.plot(
        [finder.suggestion],
        [_interpolate_log(rates, losses, finder.suggestion)],
        marker="*",
        markersize=14,
        color="green",
        linestyle="none",
    )
    ax.axvline(
        finder.auto_rate, color="purple", linestyle=":", label=f"auto {finder.auto_rate:.3g}"
    )
    ax.set_xscale("log")
    _log_scale_if_positive(ax, losses[finite])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (objective)")
    ax.set_title(f"learning-rate finder ({finder.strategy})")
    ax.legend(fontsize="small")
    return ax


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
    paths : DescentPath or sequence of DescentPath
        Paths of the same problem (e.g. several learning rates).
    ax : matplotlib Axes, optional
    resolution : int
        Grid points per axis.
    margin : float
        How far the box reaches beyond the paths, as a fraction of its size.

    Returns
    -------
    matplotlib Axes
    """
    from .playground import DescentPath

    if isinstance(paths, DescentPath):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("plot_loss_surface needs at least one DescentPath.")
    ax = _axes(ax)
    first = paths[0]
    points = np.concatenate(
        [path.points[np.all(np.isfinite(path.points), axis=1)] for path in paths]
    )
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high - low > 0, high - low, np.maximum(np.abs(high), 1.0))
    low, high = low - margin * span, high + margin * span
    n_parameters = first.points.shape[1]
    if n_parameters == 1:
        grid = np.linspace(low[0], high[0], resolution * 4)
        ax.plot(grid, first.objective(grid[:, None]), color="black", linewidth=1, label="objective")
    else:
        grid_x = np.linspace(low[0], high[0], resolution)
        grid_y = np.linspace(low[1], high[1], resolution)
        mesh_x, mesh_y = np.meshgrid(grid_x, grid_y)
        surface = first.objective(np.column_stack([mesh_x.ravel(), mesh_y.ravel()]))
        surface = surface.reshape(mesh_x.shape)
        bottom, top = float(surface.min()), float(surface.max())
        if bottom > 0 and top > bottom:
            levels = np.geomspace(bottom, top, 20)
        else:
            levels = np.linspace(bottom, top, 20)
        ax.contourf(mesh_x, mesh_y, surface, levels=levels, cmap="viridis", alpha=0.5)
        ax.contour(mesh_x, mesh_y, surface, levels=levels, colors="k", linewidths=0.4)
        ax.set_ylabel(first.parameter_names[1])
    for path in paths:
        rate = "auto" if path.learning_rate == "auto" else "lr"
        label = f"{path.strategy}, {rate} {path.step:.3g}" + (
            " (diverged)" if path.diverged else ""
        )
        if n_parameters == 1:
            (line,) = ax.plot(path.points[:, 0], path.losses, marker="o", markersize=4, label=label)
            ends = path.points[[0, -1], 0], path.losses[[0, -1]]
        else:
            (line,) = ax.plot(
                path.points[:, 0], path.points[:, 1], marker="o", markersize=3, label=label
            )
            ends = path.points[[0, -1], 0], path.points[[0, -1], 1]
        ax.plot(
            ends[0][:1],
            ends[1][:1],
            marker="o",
            markersize=9,
            color=line.get_color(),
            markerfacecolor="none",
            linestyle="none",
        )
        ax.plot(
            ends[0][1:],
            ends[1][1:],
            marker="s",
            markersize=8,
            color=line.get_color(),
            linestyle="none",
        )
    if n_parameters == 1:
        ax.set_ylabel("loss (objective)")
        _log_scale_if_positive(ax, first.losses)
    ax.set_xlim(low[0], high[0])
    if n_parameters == 2:
        ax.set_ylim(low[1], high[1])
    ax.set_xlabel(first.parameter_names[0])
    ax.set_title("loss surface and the path of the weights")
    ax.legend(fontsize="small")
    return ax


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
