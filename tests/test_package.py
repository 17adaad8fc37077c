"""Package-level promises: import compiles nothing, the option table is consistent, the
compile flags follow DESIGN.md, and the README's demo runs."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastgd
import fastgd._kernels
from fastgd import options
from fastgd._kernels import _config, records, scalar


def test_import_compiles_nothing():
    """``import fastgd`` imports nothing heavy (so ``python -m fastgd`` takes over Ctrl-C
    before numpy/Numba load, issue 10), and loading every public name compiles nothing."""
    code = textwrap.dedent(
        """
        import sys
        import fastgd
        heavy = sorted({"numpy", "numba", "polars", "sklearn", "scipy"} & set(sys.modules))
        assert heavy == [], heavy
        for name in fastgd.__all__:
            getattr(fastgd, name)
        import numba.core.registry
        from numba.core.dispatcher import Dispatcher
        compiled = [
            f"{name}.{attr}"
            for name, module in list(sys.modules.items())
            if name.startswith("fastgd")
            for attr, value in vars(module).items()
            if isinstance(value, Dispatcher) and value.signatures
        ]
        print(compiled)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_imports_and_is_listed():
    assert set(fastgd.__all__) <= set(dir(fastgd))
    for name in fastgd.__all__:
        exec(f"from fastgd import {name}", {})
    assert fastgd.options is options and fastgd.fit is fastgd.engine.fit
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        fastgd.nonsense  # noqa: B018


def test_fastmath_flags_never_drop_nan_or_inf_checks():
    assert {"reassoc", "contract", "nsz", "arcp"} <= _config.FASTMATH
    assert not {"nnan", "ninf", "fast"} & _config.FASTMATH


@pytest.mark.parametrize(
    "table",
    [
        options.LOSSES,
        options.PENALTIES,
        options.SCHEDULES,
        options.STRATEGIES,
        options.UPDATE_RULES,
    ],
)
def test_option_codes_are_unique_and_dense(table):
    codes = [row.code for row in table]
    assert sorted(codes) == list(range(len(codes)))
    assert len({row.name for row in table}) == len(table)


def test_kernel_loss_codes_match_the_table():
    for loss in options.LOSSES:
        assert getattr(scalar, loss.name.upper()) == loss.code


def test_every_schedule_selects_a_known_update_rule():
    """``learning_rate`` reaches the update rules (``pa1``/``pa2`` as in scikit-learn);
    the plain rule runs under every strategy, and the schedules' kernel codes are the
    per-step ones."""
    per_step = {options.SCHEDULE_CONSTANT, options.SCHEDULE_OPTIMAL, options.SCHEDULE_INVSCALING}
    for schedule in options.SCHEDULES:
        assert schedule.rule in options.UPDATE_RULES
        assert schedule.kernel_code in per_step
    assert options.schedule_by_name("pa1").rule.name == "pa1"
    assert options.schedule_by_name("constant").rule.name == "sgd"
    assert options.update_rule_by_name("sgd").strategies == {row.name for row in options.STRATEGIES}
    for rule in options.UPDATE_RULES:
        assert rule.slots >= 0 and rule.strategies <= {row.name for row in options.STRATEGIES}


def test_probability_losses_are_marked_in_the_table():
    assert {loss.name for loss in options.LOSSES if loss.probabilities} == {
        "log_loss",
        "modified_huber",
    }
    assert all(loss.classification for loss in options.LOSSES if loss.probabilities)


def _kernel_modules():
    for info in pkgutil.iter_modules(fastgd._kernels.__path__):
        yield importlib.import_module(f"fastgd._kernels.{info.name}")


def _kernel_signatures() -> dict:
    """Every compiled function of ``fastgd._kernels`` (kernels and inlined helpers) and its
    Python signature (nothing is compiled)."""
    from numba.core.dispatcher import Dispatcher

    return {
        f"{module.__name__}.{name}": inspect.signature(value.py_func)
        for module in _kernel_modules()
        for name, value in vars(module).items()
        if isinstance(value, Dispatcher) and value.py_func.__module__ == module.__name__
    }


def test_no_kernel_takes_more_than_twelve_parameters():
    """Kernel inputs are records (``records.Spec``, ``records.State``), not argument lists."""
    signatures = _kernel_signatures()
    assert "fastgd._kernels.epochs._linear_rows" in signatures  # the walk finds kernels
    too_many = {name: len(s.parameters) for name, s in signatures.items() if len(s.parameters) > 12}
    assert too_many == {}


def test_no_kernel_has_default_arguments():
    """Numba's cache mishandles omitted arguments (numba#4959): ``batch_epoch`` called
    without its ``block_rows=0`` compiled and ran, then crashed the next process that
    loaded it from the cache. Every kernel argument is passed."""
    defaults = {
        name: [p.name for p in s.parameters.values() if p.default is not p.empty]
        for name, s in _kernel_signatures().items()
    }
    assert {name: found for name, found in defaults.items() if found} == {}


def test_kernel_records_have_fixed_field_types():
    """``make_spec``/``make_state`` fix every field's type, so numpy scalars from callers
    compile (and cache) no extra specialisation."""
    spec = records.make_spec(
        loss=np.int32(1), epsilon=np.float32(0.1), schedule=np.int64(0), rule=0,
        eta0=np.float32(0.5), power_t=1, alpha=np.float64(1e-4), optimal_init=0,
        l1=0, l2=np.float32(0.0), fit_intercept=np.bool_(True), average_start=1,
    )  # fmt: skip
    assert [type(value) for value in spec] == [
        int, float, int, int, float, float, float, float, float, float, bool, float,
        float, bool, float, float, float, float, float, int,
    ]  # fmt: skip
    w = np.zeros(3, dtype=np.float32)
    state = records.make_state(w, np.float32(0.5), 1)
    assert state.w is w and type(state.intercept) is float and type(state.t) is float
    assert state.avg_w.shape == (0,) and state.slots.shape == (0, 3)
    assert state.l1_memory.shape == (0,) and state.l1_memory.dtype == np.float64


def test_a_warm_cache_serves_the_record_taking_kernels_in_a_new_process():
    """Numba caches kernels that take the records like any others: a second process
    loads ``sgd_epoch``'s row loop (``_linear_rows`` for this plain fit) from the on-disk
    cache and compiles nothing (the first one fills the cache if it is cold)."""
    code = textwrap.dedent(
        """
        import numpy as np
        import fastgd
        from fastgd._kernels import epochs
        X = np.arange(8.0).reshape(4, 2)
        fastgd.fit(X, np.ones(4), strategy="sgd", max_iter=1, tol=None)
        stats = epochs._linear_rows.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
        """
    )
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
    hits, misses = map(int, out.stdout.split())
    assert (hits, misses) == (1, 0)


@pytest.mark.parametrize(
    ("lookup", "bad", "parameter"),
    [
        (options.loss_by_name, "squared", "loss"),
        (options.penalty_by_name, "l3", "penalty"),
        (options.schedule_by_name, "fast", "learning_rate"),
        (options.strategy_by_name, "batch", "strategy"),
    ],
)
def test_unknown_option_names_list_the_allowed_values(lookup, bad, parameter):
    with pytest.raises(ValueError, match=parameter) as error:
        lookup(bad)
    table = {
        "loss": options.LOSSES,
        "penalty": options.PENALTIES,
        "learning_rate": options.SCHEDULES,
        "strategy": options.STRATEGIES,
    }[parameter]
    for row in table:
        assert repr(row.name) in str(error.value)


def test_demo_runs_and_reports_every_strategy():
    out = subprocess.run(
        [sys.executable, "-m", "fastgd.demo", "--samples", "3000", "--features", "5",
         "--epochs", "3", "--full-epochs", "30"],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    lines = out.stdout.splitlines()
    for task in ("regression", "classification"):
        rows = [line for line in lines if line.startswith(task)]
        assert [row.split()[1] for row in rows] == ["full", "sgd", "minibatch"]
    assert fastgd.__version__ in out.stdout
    estimators = [line.split()[0] for line in lines if "accuracy" in line and "fit " in line]
    assert estimators == ["scikit-learn", "fastgd", "fastgd,"]
    assert any(line.startswith("fit_csv on a") and "(3,000 rows)" in line for line in lines)


def _module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """Every module of the package below ``root``: dotted name -> (file, is a package)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _imported(node, package: str, modules) -> list[str]:
    """The package's modules one ``import`` statement names (relative ones resolved):
    ``from A import B`` names ``A.B`` where that is a module, else ``A``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Which of the package's modules each module imports, anywhere in it: at the top and
    inside functions (a function-level import still runs, it only hides a cycle)."""
    modules = _module_names(root)
    graph = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        graph[name] = {
            target
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for target in _imported(node, package, modules)
            if target in modules and target != name
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as its modules in order (first repeated last), or None."""
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return [*trail[trail.index(name) :], name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            cycle = visit(target, [*trail, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_find_cycle_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("from .sub.c import thing\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text("def thing():\n    from ..a import x\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.sub.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    (package / "sub" / "c.py").write_text("def thing():\n    return 1\n")
    assert find_cycle(import_graph(package)) is None


def test_fastgd_has_no_import_cycle_even_through_function_level_imports():
    graph = import_graph(Path(fastgd.__file__).parent)
    assert {"fastgd.engine", "fastgd.prediction", "fastgd.plot"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_plot_imports_nothing_of_fastgd():
    # Pictures take plain data: drawing must not need (or be able to loop back to) the
    # modules that compute.
    assert import_graph(Path(fastgd.__file__).parent)["fastgd.plot"] == set()
