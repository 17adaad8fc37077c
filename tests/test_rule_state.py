"""The update rule's state (slots and step counter) outlives a call: it is carried by the
estimators' ``partial_fit``, kept in model files (format 1.2, checked on load) and in
``fastgd train``'s checkpoints, and ``--resume`` continues the same optimizer, so k epochs
and a resumed m equal k + m epochs of one run."""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import numpy as np
import pytest
from test_cli_train import write_problem

import fastgd
from fastgd import SGDClassifier, SGDRegressor, cli, options
from fastgd.io.model import _SIGNED_SLOT_RULES, _SQUARE_SLOTS, ModelFormatError, kept_rule

# ------------------------------------------------------------------ helpers


def regression(n=120, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal(d) + 0.5 + 0.1 * rng.standard_normal(n)


#: fastgd.fit's options that make it the estimators' engine call (their defaults differ).
AS_ESTIMATOR = dict(strategy="sgd", penalty="l2", alpha=1e-4, learning_rate="constant",
                    eta0=0.01, shuffle=False, tol=None, normalize_weights=False,
                    divergence_checks="non_finite")  # fmt: skip


def members_of(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_members(path, members: dict) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def edit_file(source, target, edit) -> None:
    """Copy the model file ``source`` to ``target`` with ``edit(members, metadata)``."""
    members = members_of(source)
    metadata = json.loads(members["metadata.json"])
    edit(members, metadata)
    members["metadata.json"] = json.dumps(metadata).encode()
    write_members(target, members)


# ------------------------------------------------------------------ model files


@pytest.fixture(scope="module")
def adam_file(tmp_path_factory):
    X, y = regression()
    result = fastgd.fit(X, y, optimizer="adam", strategy="sgd", learning_rate="constant",
                        eta0=0.01, max_iter=2, random_state=0)  # fmt: skip
    path = fastgd.save(result, tmp_path_factory.mktemp("rule") / "adam.npz")
    return result, path


def test_a_model_file_keeps_the_rules_slots_and_step_counter(adam_file):
    result, path = adam_file
    model = fastgd.load(path)
    assert model.format_version == (1, 3)
    state = model.rule_state
    assert state.optimizer == "adam" and state.t == result.t == 1 + 2 * 120
    assert state.slots.dtype == np.float64 and state.slots.shape == (1, 2, 5)
    np.testing.assert_array_equal(state.slots[0], result.slots)
    assert (state.slots[0, 1] > 0).all()  # Adam's second moments moved
    metadata = json.loads(members_of(path)["metadata.json"])
    assert metadata["rule_state"] == {"optimizer": "adam", "t": result.t}


@pytest.mark.parametrize("optimizer", ["sgd", "saga"])
def test_rules_without_slots_to_keep_write_none(tmp_path, optimizer):
    """Plain SGD has no slots; SAGA's row memory belongs to one call's rows (it restarts)."""
    X, y = regression()
    result = fastgd.fit(X, y, optimizer=optimizer, strategy="sgd", learning_rate="constant",
                        eta0=0.01, max_iter=1)  # fmt: skip
    path = fastgd.save(result, tmp_path / "m.npz")
    assert fastgd.load(path).rule_state is None
    assert "rule_slots.npy" not in members_of(path)


def test_every_kept_rule_declares_which_slots_hold_squares():
    """load refuses negative sums of squares: every rule a model keeps must be listed as
    keeping squares (which slots) or signed values."""
    kept = {row.name for row in options.UPDATE_RULES if kept_rule(row.name) is not None}
    assert kept == set(_SQUARE_SLOTS) | set(_SIGNED_SLOT_RULES)
    assert "saga" not in kept and "sgd" not in kept


def test_an_older_file_without_rule_state_loads(tmp_path, adam_file):
    _, path = adam_file
    older = tmp_path / "older.npz"

    def as_1_1(members, metadata):
        members.pop("rule_slots.npy")
        metadata.pop("rule_state")
        metadata["format_version"] = "1.1"

    edit_file(path, older, as_1_1)
    model = fastgd.load(older)
    assert model.format_version == (1, 1) and model.rule_state is None
    np.testing.assert_array_equal(model.coef, fastgd.load(path).coef)


def _set_slots(value):
    def edit(members, metadata):
        members["rule_slots.npy"] = npy(value)

    return edit


def _set_state(**fields):
    def edit(members, metadata):
        metadata["rule_state"].update(fields)

    return edit


def _negative_second_moment(members, metadata):
    slots = np.load(io.BytesIO(members["rule_slots.npy"]))
    slots[0, 1, 2] = -1e-3
    members["rule_slots.npy"] = npy(slots)


def _drop_member(members, metadata):
    members.pop("rule_slots.npy")


def _drop_state(members, metadata):
    metadata.pop("rule_state")


BAD_RULE_STATES = {
    "wrong shape": (_set_slots(np.zeros((1, 1, 5))), r"rule_slots has shape \(1, 1, 5\); 'adam'"),
    "too few columns": (_set_slots(np.zeros((1, 2, 4))), r"keeps \(1, 2, 5\)"),
    "two dimensions": (_set_slots(np.zeros((2, 5))), r"rule_slots\.npy has shape \(2, 5\)"),
    "integers": (_set_slots(np.zeros((1, 2, 5), dtype=np.int64)), r"rule_slots\.npy holds int"),
    "nan": (_set_slots(np.full((1, 2, 5), np.nan)), r"rule_slots holds 10 non-finite"),
    "negative square": (_negative_second_moment, r"slot 1 of 'adam' .* \(0, 2\) is negative"),
    "unknown optimizer": (_set_state(optimizer="lion"), r"optimizer 'lion'; a model keeps"),
    "saga": (_set_state(optimizer="saga"), r"optimizer 'saga'; a model keeps"),
    "t below one": (_set_state(t=0.5), r"step counter t is 0\.5; expected a number >= 1"),
    "t as text": (_set_state(t="301"), r"'rule_state' must hold 't' as a number; got a string"),
    "t missing": (lambda m, meta: meta["rule_state"].pop("t"), r"'t' as a number; got nothing"),
    "state a list": (lambda m, meta: meta.update(rule_state=[1]), r"'rule_state' must be an obj"),
    "member missing": (_drop_member, r"the member rule_slots\.npy is missing"),
    "member without state": (_drop_state, r"rule_slots\.npy is present but .* no 'rule_state'"),
}


@pytest.mark.parametrize("case", sorted(BAD_RULE_STATES))
def test_malformed_rule_state_is_refused_with_a_clear_error(tmp_path, adam_file, case):
    edit, message = BAD_RULE_STATES[case]
    bad = tmp_path / "bad.npz"
    edit_file(adam_file[1], bad, edit)
    with pytest.raises(ModelFormatError, match=rf"bad\.npz: not a valid fastgd model: .*{message}"):
        fastgd.load(bad)


def test_save_refuses_a_model_whose_rule_state_does_not_fit(tmp_path, adam_file):
    model = fastgd.load(adam_file[1])
    model.rule_state = model.rule_state._replace(slots=np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"cannot save the model .* rule_slots has shape"):
        fastgd.save(model, tmp_path / "m.npz")


# ------------------------------------------------------------------ partial_fit


def test_partial_fit_continues_the_rule_as_fit_with_slots_init_chained():
    """n partial_fit calls with Adam equal n one-epoch fastgd.fit calls, each started from the
    last one's weights, step counter and slots; without the slots they differ."""
    X, y = regression()
    estimator = SGDRegressor(optimizer="adam", learning_rate="constant", eta0=0.01,
                             shuffle=False, tol=None, random_state=0)  # fmt: skip
    chained = forgetful = None
    for _ in range(3):
        estimator.partial_fit(X, y)
        chained = _one_epoch(X, y, chained, keep_slots=True)
        forgetful = _one_epoch(X, y, forgetful, keep_slots=False)
    np.testing.assert_array_equal(estimator.coef_, chained.coef)
    np.testing.assert_array_equal(estimator.intercept_, [chained.intercept])
    np.testing.assert_array_equal(estimator._slots[0], chained.slots)
    assert estimator.t_ == chained.t == 1 + 3 * 120
    assert np.abs(estimator.coef_ - forgetful.coef).max() > 1e-3  # the slots matter


def _one_epoch(X, y, previous, keep_slots: bool):
    if previous is None:
        return fastgd.fit(X, y, optimizer="adam", max_iter=1, **AS_ESTIMATOR)
    return fastgd.fit(
        X, y, optimizer="adam", max_iter=1, coef_init=previous.coef,
        intercept_init=previous.intercept, t_init=previous.t,
        slots_init=previous.slots if keep_slots else None, **AS_ESTIMATOR,
    )  # fmt: skip


def test_partial_fit_of_one_vs_rest_classes_equals_one_fit():
    """Each class keeps its own slots: three partial_fit calls of a 3-class Adam classifier
    equal fit with max_iter=3 (same rows in the same order)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((90, 3))
    y = np.argmax(X @ rng.standard_normal((3, 3)), axis=1)
    kw = dict(optimizer="adam", learning_rate="constant", eta0=0.01, shuffle=False, tol=None)
    stepped = SGDClassifier(**kw)
    for _ in range(3):
        stepped.partial_fit(X, y, classes=[0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached
        whole = SGDClassifier(max_iter=3, **kw).fit(X, y)
    np.testing.assert_array_equal(stepped.coef_, whole.coef_)
    np.testing.assert_array_equal(stepped.intercept_, whole.intercept_)
    assert len(stepped._slots) == 3 and not np.array_equal(stepped._slots[0], stepped._slots[1])


def test_an_estimator_saves_each_classes_slots(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 3))
    y = np.argmax(X @ rng.standard_normal((3, 3)), axis=1)
    estimator = SGDClassifier(optimizer="momentum", learning_rate="constant", eta0=0.01)
    estimator.partial_fit(X, y, classes=[0, 1, 2])
    model = fastgd.load(fastgd.save(estimator, tmp_path / "m.npz"))
    assert model.rule_state.optimizer == "momentum" and model.rule_state.t == estimator.t_
    np.testing.assert_array_equal(model.rule_state.slots, np.stack(estimator._slots))
    estimator.set_params(optimizer="adagrad")  # the slots are momentum's, not adagrad's
    assert fastgd.load(fastgd.save(estimator, tmp_path / "n.npz")).rule_state.optimizer == (
        "momentum"
    )


def test_partial_fit_starts_a_changed_optimizer_afresh():
    """Momentum's velocity is not AdaGrad's sum of squares: after set_params(optimizer=...)
    the next call starts the new rule from zeros (weights and step counter carry on)."""
    X, y = regression()
    estimator = SGDRegressor(optimizer="momentum", learning_rate="constant", eta0=0.01,
                             shuffle=False, tol=None)  # fmt: skip
    estimator.partial_fit(X, y)
    coef, intercept, t = estimator.coef_.copy(), estimator.intercept_[0], estimator.t_
    estimator.set_params(optimizer="adagrad").partial_fit(X, y)
    fresh = fastgd.fit(X, y, optimizer="adagrad", max_iter=1, coef_init=coef,
                       intercept_init=intercept, t_init=t, **AS_ESTIMATOR)  # fmt: skip
    np.testing.assert_array_equal(estimator.coef_, fresh.coef)


# ------------------------------------------------------------------ fastgd train --resume


def run(argv, capsys):
    code = cli.main([str(item) for item in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    write_problem(path, n=300)
    return path


def train_args(data, model, optimizer, *extra):
    return ["train", data, "--target", "y", "--drop", "id", "--model", model, "--strategy",
            "minibatch", "--batch-size", "32", "--learning-rate", "constant", "--eta0", "0.01",
            "--optimizer", optimizer, "--tol", "none", "--random-state", "0", "--quiet",
            *extra]  # fmt: skip


def resume_args(data, model, epochs):
    return ["train", data, "--model", model, "--resume", "--epochs", epochs, "--quiet"]


@pytest.mark.parametrize(
    ("optimizer", "scaling"), [("adam", []), ("momentum", ["--no-standardize"])]
)
def test_train_k_then_resume_m_equals_k_plus_m_epochs(tmp_path, capsys, data, optimizer, scaling):
    """The slots (standardised or raw, as the weights), the step counter and the row orders'
    generator carry over: the resumed model is the uninterrupted one, bit for bit."""
    split, whole = tmp_path / "split.npz", tmp_path / "whole.npz"
    assert run([*train_args(data, split, optimizer, *scaling), "--epochs", 2], capsys)[0] == 0
    stopped = fastgd.load(split)
    assert stopped.rule_state.optimizer == optimizer
    assert run(resume_args(data, split, 3), capsys)[0] == 0
    assert run([*train_args(data, whole, optimizer, *scaling), "--epochs", 5], capsys)[0] == 0
    resumed, uninterrupted = fastgd.load(split), fastgd.load(whole)
    np.testing.assert_array_equal(resumed.coef, uninterrupted.coef)
    assert resumed.intercept == uninterrupted.intercept
    np.testing.assert_array_equal(resumed.rule_state.slots, uninterrupted.rule_state.slots)
    assert resumed.rule_state.t == uninterrupted.rule_state.t == resumed.summary["t"]
    np.testing.assert_array_equal(
        resumed.summary["loss_history"], uninterrupted.summary["loss_history"]
    )
    # an older file (no rule state) resumes too, the rule afresh: another model
    older = tmp_path / "older.npz"
    edit_file(stopped_copy(tmp_path, stopped), older, _strip_rule_state)
    assert run(resume_args(data, older, 3), capsys)[0] == 0
    assert np.abs(fastgd.load(older).coef - uninterrupted.coef).max() > 1e-6


def stopped_copy(tmp_path, model):
    return fastgd.save(model, tmp_path / "stopped.npz")


def _strip_rule_state(members, metadata):
    members.pop("rule_slots.npy")
    metadata["rule_state"] = None
    metadata["format_version"] = "1.1"


def test_a_ctrl_c_checkpoint_resumes_the_same_optimizer(tmp_path, capsys, data, monkeypatch):
    """The checkpoint of epoch 2 (written from the epoch callback) keeps the slots and the
    generator's state of that moment: resuming it for 2 epochs gives the 4-epoch model."""
    import fastgd.stream

    real_fit_csv = fastgd.stream.fit_csv

    def interrupted_fit_csv(*args, callback, **kwargs):
        def stop_after_epoch_2(epoch, coef, intercept, loss):
            callback(epoch, coef, intercept, loss)
            if epoch == 2:
                raise KeyboardInterrupt

        return real_fit_csv(*args, callback=stop_after_epoch_2, **kwargs)

    split, whole = tmp_path / "split.npz", tmp_path / "whole.npz"
    with monkeypatch.context() as patch:
        patch.setattr(fastgd.stream, "fit_csv", interrupted_fit_csv)
        code, _, _ = run([*train_args(data, split, "adam"), "--epochs", 4, "--checkpoint"], capsys)
    assert code == 130
    checkpoint = fastgd.load(split)
    assert checkpoint.summary["checkpoint"] is True and checkpoint.rule_state.t == 1 + 2 * 10
    assert run(resume_args(data, split, 2), capsys)[0] == 0
    assert run([*train_args(data, whole, "adam"), "--epochs", 4], capsys)[0] == 0
    np.testing.assert_array_equal(fastgd.load(split).coef, fastgd.load(whole).coef)
    np.testing.assert_array_equal(
        fastgd.load(split).rule_state.slots, fastgd.load(whole).rule_state.slots
    )


@pytest.mark.parametrize(
    ("flags", "reason"),
    [(["--optimizer", "rmsprop"], "this run's optimizer is 'rmsprop'"),
     (["--no-standardize"], "standardised features and this run uses the raw ones")],
)  # fmt: skip
def test_resume_with_another_optimizer_or_space_starts_the_rule_afresh(
    tmp_path, capsys, data, flags, reason
):
    model = tmp_path / "m.npz"
    assert run([*train_args(data, model, "adam"), "--epochs", 1], capsys)[0] == 0
    code, _, err = run([*resume_args(data, model, 1), *flags], capsys)
    assert code == 0
    assert "fastgd: warning: --resume: the model keeps the state of the optimizer 'adam'" in err
    assert reason in err and "the update rule starts afresh" in err
    resumed = fastgd.load(model)
    assert resumed.summary["epochs"] == 2
    assert resumed.rule_state.optimizer == ("rmsprop" if "rmsprop" in flags else "adam")


def test_resume_refuses_a_malformed_generator_state(tmp_path, capsys, data):
    model, bad = tmp_path / "m.npz", tmp_path / "bad.npz"
    assert run([*train_args(data, model, "adam"), "--epochs", 1], capsys)[0] == 0
    edit_file(model, bad, lambda m, meta: meta["summary"]["rng_state"].update(state={"x": 1}))
    code, _, err = run(resume_args(data, bad, 1), capsys)
    assert code == 1 and "'rng_state' is malformed" in err and "--random-state N" in err
    # --random-state draws the orders afresh from the seed instead
    assert run([*resume_args(data, bad, 1), "--random-state", "3"], capsys)[0] == 0


def test_a_divergence_checkpoint_keeps_the_rule_state_of_the_best_weights(tmp_path, capsys):
    """The diverged run's checkpoint holds the best weights (here, after the resumed run's
    epoch 2) with the slots and step counter of that moment: those of the same run stopped
    after 2 epochs."""
    data = tmp_path / "d.csv"
    write_problem(data, n=300)
    start, diverged, stopped = (tmp_path / name for name in ("s.npz", "d.npz", "e.npz"))
    flags = ["--target", "y", "--drop", "id", "--strategy", "sgd", "--learning-rate",
             "constant", "--optimizer", "adam", "--tol", "none", "--random-state", "0",
             "--no-standardize", "--quiet"]  # fmt: skip
    assert run(["train", data, "--model", start, *flags, "--eta0", "0.05", "--epochs", 2],
               capsys)[0] == 0  # fmt: skip
    for target in (diverged, stopped):
        target.write_bytes(start.read_bytes())
    code, _, err = run([*resume_args(data, diverged, 3), "--eta0", "10", "--checkpoint"], capsys)
    assert code == 1 and "best weights reached (after epoch 2)" in err
    assert run([*resume_args(data, stopped, 2), "--eta0", "10"], capsys)[0] == 0
    best, expected = fastgd.load(diverged), fastgd.load(stopped)
    assert best.summary["diverged"] is True and best.rule_state.t == 1 + 4 * 300
    np.testing.assert_array_equal(best.coef, expected.coef)
    np.testing.assert_array_equal(best.rule_state.slots, expected.rule_state.slots)


# ------------------------------------------------------------------ --resume on another file


def write_penguins(path, species_counts: dict, seed=0):
    """A small penguins-like CSV: a numeric and a text feature, a two-class target."""
    rng = np.random.default_rng(seed)
    lines = ["bill,species,sex"]
    for species, count in species_counts.items():
        for _ in range(count):
            bill = rng.normal(40.0, 5.0)
            sex = "male" if bill + rng.normal(0.0, 3.0) > 40.0 else "female"
            lines.append(f"{bill:.2f},{species},{sex}")
    rng.shuffle(lines[1:])
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "new_counts",
    [{"Adelie": 60, "Gentoo": 40},  # a level missing
     {"Adelie": 60, "Chinstrap": 30, "Gentoo": 40, "Macaroni": 20},  # a new level
     {"Gentoo": 90, "Chinstrap": 50, "Adelie": 10}],  # another frequency order
)  # fmt: skip
def test_resume_on_a_file_with_other_levels_keeps_the_models_encoding(tmp_path, capsys, new_counts):
    first = write_penguins(tmp_path / "first.csv", {"Adelie": 90, "Chinstrap": 50, "Gentoo": 40})
    new = write_penguins(tmp_path / "new.csv", new_counts, seed=1)
    model = tmp_path / "pr.npz"
    flags = ["--target", "sex", "--loss", "log_loss", "--quiet", "--random-state", "0"]
    assert run(["train", first, "--model", model, "--epochs", 2, *flags], capsys)[0] == 0
    trained = fastgd.load(model)
    assert trained.feature_names[1:4] == ["species=Adelie", "species=Chinstrap", "species=Gentoo"]
    code, _, err = run(["train", new, "--model", model, "--resume", "--epochs", 2, *flags], capsys)
    assert code == 0, err
    resumed = fastgd.load(model)
    assert resumed.feature_names == trained.feature_names
    assert resumed.encoding == trained.encoding  # its levels, means and scales
    assert resumed.summary["epochs"] == 4
    assert not np.array_equal(resumed.coef, trained.coef)  # it trained on the new rows


def test_resume_names_the_models_columns_the_file_lacks(tmp_path, capsys):
    first = write_penguins(tmp_path / "first.csv", {"Adelie": 50, "Gentoo": 40})
    model = tmp_path / "pr.npz"
    flags = ["--target", "sex", "--loss", "log_loss", "--quiet"]
    assert run(["train", first, "--model", model, "--epochs", 1, *flags], capsys)[0] == 0
    lacking = tmp_path / "lacking.csv"
    lacking.write_text("".join(line.split(",", 1)[1] + "\n" for line in
                               first.read_text().splitlines()))  # fmt: skip
    code, _, err = run(["train", lacking, "--model", model, "--resume", *flags], capsys)
    assert code == 1 and "the model's column(s) 'bill' are not in the file's header" in err


def test_fit_csv_with_a_given_encoding_refuses_a_file_without_its_columns(tmp_path):
    from fastgd.io.csv import CsvError
    from fastgd.stream import fit_csv

    first = write_penguins(tmp_path / "first.csv", {"Adelie": 50, "Gentoo": 40})
    encoding = fit_csv(first, target="sex", loss="log_loss", max_iter=1).extras["encoding"]
    other = tmp_path / "other.csv"
    other.write_text(first.read_text().replace("species", "island", 1))
    with pytest.raises(CsvError, match=r"the encoding's column\(s\) 'species' are not in the file"):
        fit_csv(other, target="sex", loss="log_loss", max_iter=1, encoding=encoding)
    with pytest.raises(ValueError, match="features/drop must select the encoding's columns"):
        fit_csv(first, target="sex", features=["bill"], loss="log_loss", encoding=encoding)


def test_a_failed_train_says_where_the_cache_was_kept(tmp_path, capsys):
    data = write_penguins(tmp_path / "one.csv", {"Adelie": 30})
    data.write_text(data.read_text().replace("female", "male"))  # one class
    model = tmp_path / "m.npz"
    code, _, err = run(["train", data, "--target", "sex", "--loss", "log_loss", "--model",
                        model, "--quiet"], capsys)  # fmt: skip
    assert code == 1 and "needs two classes or more" in err
    assert f"the cache was kept in {data.resolve()}.fastgd-cache (" in err
    assert "'fastgd cache clear' removes it" in err and not model.exists()
