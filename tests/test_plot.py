"""fastgd.plot draws headless (Agg) and draws the right things: series, labels, scales,
markers. matplotlib is optional: without it the message says what to install."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fastgd

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fastgd import plot  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 2))
    return X, X @ np.array([1.0, -2.0]) + 0.5 + 0.1 * rng.standard_normal(200)


def labelled_lines(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_plot_fit_draws_the_loss_curve(data):
    X, y = data
    result = fastgd.fit(X, y, strategy="full", max_iter=15, tol=None, random_state=0)
    ax = plot.plot_fit(result)
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_ydata(), result.loss_history)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 16))
    assert ax.get_xlabel() == "epoch" and "loss" in ax.get_ylabel()
    assert ax.get_yscale() == "log"
    assert "15 epochs" in ax.get_title()


def test_fit_result_plot_method_draws_on_the_given_axes(data):
    X, y = data
    result = fastgd.fit(X, y, strategy="full", max_iter=6, tol=None, random_state=0)
    _, given = plt.subplots()
    ax = result.plot(ax=given)
    assert ax is given
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_ydata(), result.loss_history)


def test_plot_sweep_one_series_per_run_and_diverged_runs_marked(data):
    X, y = data
    table = fastgd.sweep(X, y, [0.01, 0.3, 50.0], ["sgd", "full"], max_iter=5, tol=None)
    diverged = [run for run in table if run.diverged]
    assert diverged  # 50 is far beyond the stable range of both strategies
    _, ax = plt.subplots()
    assert plot.plot_sweep(table, ax=ax) is ax
    lines = labelled_lines(ax)
    assert len(lines) == len(table) == 6
    assert [line.get_label() for line in lines] == [
        run.label + (" (diverged)" if run.diverged else "") for run in table
    ]
    for line, run in zip(lines, table, strict=True):
        if run.diverged:
            assert line.get_marker() == "x"
        else:
            np.testing.assert_array_equal(line.get_ydata(), run.loss_history)
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert sum("(diverged)" in text for text in legend) == len(diverged)
    # the result's own shortcut draws the same
    assert len(labelled_lines(table.plot())) == 6


def test_plot_learning_rate_finder_marks_the_suggestion(data):
    X, y = data
    finder = fastgd.find_learning_rate(X, y)
    ax = plot.plot_learning_rate_finder(finder)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "learning rate" and "loss" in ax.get_ylabel()
    curve = ax.get_lines()[0]
    finite = np.isfinite(finder.losses)
    np.testing.assert_array_equal(curve.get_xdata(), finder.learning_rates[finite])
    vertical = [
        line for line in ax.get_lines() if list(line.get_xdata()) == [finder.suggestion] * 2
    ]
    assert len(vertical) == 1 and "suggested" in vertical[0].get_label()
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and stars[0].get_xdata()[0] == finder.suggestion
    assert any(line.get_label().startswith("auto") for line in ax.get_lines())


def test_plot_loss_surface_two_parameters_contours_and_paths():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((150, 1)) + 2.0
    y = 3.0 * X[:, 0] + 1.0
    slow = fastgd.descent_path(X, y, learning_rate=0.05, max_iter=10)
    fast = fastgd.descent_path(X, y, learning_rate=0.25, max_iter=10)
    ax = plot.plot_loss_surface([slow, fast])
    assert len(ax.collections) >= 2  # filled and line contours
    paths = labelled_lines(ax)
    assert len(paths) == 2
    np.testing.assert_array_equal(paths[0].get_xdata(), slow.points[:, 0])
    np.testing.assert_array_equal(paths[1].get_ydata(), fast.points[:, 1])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("w", "b")


def test_plot_loss_surface_one_parameter_is_a_curve():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((100, 1))
    path = fastgd.descent_path(X, 2.0 * X[:, 0], learning_rate=0.3, fit_intercept=False)
    ax = path.plot()
    objective, walk = labelled_lines(ax)
    assert objective.get_label() == "objective" and len(objective.get_xdata()) > 100
    np.testing.assert_allclose(walk.get_ydata(), path.losses)
    assert ax.get_xlabel() == "w" and "loss" in ax.get_ylabel()


def test_playground_figure_has_three_panels(data):
    X, y = data
    table = fastgd.sweep(X, y, [0.1], ["full"], max_iter=3)
    finder = fastgd.find_learning_rate(X, y)
    path = fastgd.descent_path(X[:, :1], y, max_iter=3)
    figure = plot.playground_figure(table, finder, [path])
    assert len(figure.axes) >= 3
    assert plot.figure_to_png(figure)[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_names_the_extra(monkeypatch, data):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = fastgd.fit(*data, max_iter=2, random_state=0)
    with pytest.raises(ImportError, match=r'pip install "fastgd\[plot\]"'):
        plot.plot_fit(result)


def test_import_fastgd_does_not_import_matplotlib():
    code = "import sys, fastgd; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plots_take_plain_records():
    # Plain dicts, no fastgd object: fastgd.plot needs nothing but matplotlib and data.
    ax = plot.plot_fit(
        {"loss_history": [4.0, 2.0, 1.0], "loss": "squared_error", "learning_rate": 0.1,
         "converged": True, "n_iter": 3}
    )  # fmt: skip
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [4.0, 2.0, 1.0])
    assert "3 epochs, converged" in ax.get_title()
    runs = [
        {"label": "full, lr=0.1", "step": 0.1, "strategy": "full", "batch_size": None,
         "diverged": False, "loss_history": [3.0, 1.0]},
        {"label": "full, lr=9", "step": 9.0, "strategy": "full", "batch_size": None,
         "diverged": True, "loss_history": []},
    ]  # fmt: skip
    curve, cross = labelled_lines(plot.plot_sweep(runs))
    np.testing.assert_array_equal(curve.get_ydata(), [3.0, 1.0])
    assert cross.get_label() == "full, lr=9 (diverged)" and cross.get_marker() == "x"
    assert list(cross.get_xdata()) == [1] and cross.get_linestyle() == "None"
    finder = {"learning_rates": [0.01, 0.1, 1.0], "losses": [2.0, 1.0, np.inf], "epochs": 1,
              "start_loss": 3.0, "suggestion": 0.1, "auto_rate": 0.05,
              "strategy": "sgd"}  # fmt: skip
    ax = plot.plot_learning_rate_finder(finder)
    crosses = [line for line in ax.get_lines() if line.get_label() == "diverged"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [1.0]
    path = {"points": np.array([[0.0], [1.5], [2.0]]), "losses": [4.0, 0.25, 0.0],
            "parameter_names": ["w"], "strategy": "full", "learning_rate": 0.5, "step": 0.5,
            "diverged": False, "objective": lambda points: (points[:, 0] - 2.0) ** 2}  # fmt: skip
    ax = plot.plot_loss_surface(path)
    objective, walk = labelled_lines(ax)
    np.testing.assert_allclose(objective.get_ydata(), (objective.get_xdata() - 2.0) ** 2)
    # the path ends at an exact 0: a log axis all the same, the 0 drawn at its floor
    curve = (objective.get_xdata() - 2.0) ** 2
    floor = min(curve[curve > 0].min(), 0.25) / plot.ZERO_FLOOR_DIVISOR
    assert ax.get_yscale() == "log" and f"0 drawn at {floor:.2g}" in ax.get_ylabel()
    np.testing.assert_array_equal(walk.get_ydata(), [4.0, 0.25, floor])


def fit_record(history):
    return {"loss_history": history, "loss": "squared_error", "learning_rate": 0.1,
            "converged": False, "n_iter": len(history)}  # fmt: skip


def png(ax) -> bytes:
    import io

    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png")
    return buffer.getvalue()


def test_log_axes_survive_an_exact_zero():
    """A loss curve that reaches 0 exactly (a perfect fit) keeps its log axis: the 0 is
    drawn a decade below the smallest positive value, and the axis label says so (issue
    14: the plots switched to a linear axis)."""
    history = [8.0, 2.0, 0.5, 0.0]
    floor = 0.5 / plot.ZERO_FLOOR_DIVISOR
    ax = plot.plot_fit(fit_record(history))
    assert ax.get_yscale() == "log"
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [8.0, 2.0, 0.5, floor])
    assert f"0 drawn at {floor:.2g}" in ax.get_ylabel()
    assert png(ax)[:8] == b"\x89PNG\r\n\x1a\n"  # drawn (Agg) with the clipped point

    runs = [
        {"label": "full, lr=0.1", "step": 0.1, "strategy": "full", "batch_size": None,
         "diverged": False, "loss_history": [3.0, 1.0, 0.0]},
        {"label": "full, lr=0.01", "step": 0.01, "strategy": "full", "batch_size": None,
         "diverged": False, "loss_history": [3.0, 2.0, 0.2]},
    ]  # fmt: skip
    ax = plot.plot_sweep(runs)
    perfect, other = labelled_lines(ax)
    floor = 0.2 / plot.ZERO_FLOOR_DIVISOR  # the smallest positive value of every curve
    assert ax.get_yscale() == "log" and f"0 drawn at {floor:.2g}" in ax.get_ylabel()
    np.testing.assert_array_equal(perfect.get_ydata(), [3.0, 1.0, floor])
    np.testing.assert_array_equal(other.get_ydata(), [3.0, 2.0, 0.2])
    png(ax)

    finder = {"learning_rates": [0.01, 0.1, 1.0], "losses": [2.0, 0.0, np.inf], "epochs": 1,
              "start_loss": 3.0, "suggestion": 0.05, "auto_rate": 0.05,
              "strategy": "full"}  # fmt: skip
    ax = plot.plot_learning_rate_finder(finder)
    assert ax.get_yscale() == "log" and "0 drawn at 0.2" in ax.get_ylabel()
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [2.0, 0.2])
    png(ax)


def test_log_axes_without_zeros_or_with_negatives_are_as_before():
    ax = plot.plot_fit(fit_record([8.0, 2.0, 0.5]))
    assert ax.get_yscale() == "log" and "drawn at" not in ax.get_ylabel()
    ax = plot.plot_fit(fit_record([1.0, 0.0, -0.5]))  # a score below 0: no log axis
    assert ax.get_yscale() == "linear"
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [1.0, 0.0, -0.5])
    ax = plot.plot_fit(fit_record([0.0, 0.0]))  # nothing positive to scale by
    assert ax.get_yscale() == "linear"


def test_contour_levels_stay_log_spaced_over_a_zero_region():
    """A surface that is exactly 0 over part of the box keeps log-spaced contour levels,
    from the floor up (the region below is filled too)."""
    path = {"points": np.array([[-1.0, 0.0], [1.0, 1.0]]), "losses": [0.0, 2.0],
            "parameter_names": ["w[0]", "w[1]"], "strategy": "full", "learning_rate": 0.5,
            "step": 0.5, "diverged": False,
            "objective": lambda p: np.maximum(p[:, 0], 0.0) ** 2 + p[:, 1] ** 2}  # fmt: skip
    ax = plot.plot_loss_surface(path, resolution=20)
    filled = next(c for c in ax.collections if getattr(c, "filled", False))
    ratios = filled.levels[1:] / filled.levels[:-1]
    assert filled.levels[0] > 0 and np.allclose(ratios, ratios[0]) and ratios[0] > 1
    png(ax)
