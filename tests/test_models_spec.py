"""models.spec / models.allowlist / models.online: config data in, River pipeline out."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from river import datasets, evaluate, linear_model, metrics, optim, preprocessing

from models.allowlist import ANOMALY_DETECTORS, CLASSIFIERS, PREPROCESSORS
from models.metrics import PrequentialMetrics
from models.spec import ModelOutputError, OnlineModel, build_model, one_hot
from stream_app.errors import ModelSpecError, StreamAppError
from stream_app.settings import ModelSettings, StepSettings, load_settings


def settings(*steps: dict[str, Any], **kw: Any) -> ModelSettings:
    return ModelSettings(steps=tuple(StepSettings(**step) for step in steps), **kw)


def lr(**params: Any) -> ModelSettings:
    return settings({"name": "StandardScaler"}, {"name": "LogisticRegression", "params": params})


EVENTS = [({"a": float(i % 7), "b": float(i % 3) - 1.0, "c": (i * 37 % 11) / 11.0}, i % 3 == 0)
          for i in range(60)]


# -- defaults and identity -------------------------------------------------------------------

def test_default_settings_give_standard_scaler_then_logistic_regression() -> None:
    model = build_model(ModelSettings())
    assert list(model.pipeline.steps) == ["StandardScaler", "LogisticRegression"]
    assert isinstance(model.pipeline["StandardScaler"], preprocessing.StandardScaler)
    assert isinstance(model.pipeline["LogisticRegression"], linear_model.LogisticRegression)
    assert (model.name, model.version, model.kind) == ("default", "1", "classifier")


def test_spec_hash_is_canonical() -> None:
    a = lr(l2=0.1, intercept_lr=0.02)
    b = lr(intercept_lr=0.02, l2=0.1)  # same spec, keys in another order
    assert build_model(a).spec_hash == build_model(b).spec_hash
    assert build_model(a).spec_hash != build_model(lr(l2=0.2, intercept_lr=0.02)).spec_hash
    assert build_model(a).spec_hash != build_model(ModelSettings()).spec_hash


def test_model_from_toml_style_settings() -> None:
    s = load_settings(environ={}, model={"name": "hst", "steps": [
        {"name": "MinMaxScaler"}, {"name": "HalfSpaceTrees", "params": {"seed": 42}}]})
    model = build_model(s.model)
    assert (model.name, model.kind) == ("hst", "anomaly")


# -- allow-list rejections -------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "Foo", "__import__('os')", "os.system", "eval", "exec('import os')",
    "river.linear_model.LogisticRegression", "logisticregression", "", "LogisticRegression ",
    "Pipeline", "SGD",
])
def test_unknown_class_is_rejected_with_the_allowed_names(name: str) -> None:
    with pytest.raises(ModelSpecError) as err:
        build_model(settings({"name": name}))
    assert repr(name) in str(err.value)
    assert "allowed: " in str(err.value) and "LogisticRegression" in str(err.value)
    assert isinstance(err.value, StreamAppError) and isinstance(err.value, ValueError)


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ModelSpecError, match="LogisticRegression: unknown parameter 'lrr'"):
        build_model(lr(lrr=0.1))


@pytest.mark.parametrize(("params", "needle"), [
    ({"l2": "0.1"}, "LogisticRegression.l2: expected float, got str"),
    ({"l2": True}, "LogisticRegression.l2: expected float, got bool"),
    ({"initializer": "Zeros"}, "LogisticRegression.initializer: expected NoneType"),
    ({"l2": {"__class__": 1}}, "LogisticRegression.l2: expected float, got dict"),
    ({"l2": object()}, "values must be numbers"),
    ({"optimizer": 0.1}, "LogisticRegression.optimizer: expected a name or a table"),
    ({"optimizer": {"lr": 0.1}}, "expected a name or a table with 'name'"),
    ({"optimizer": "os.system"}, "unknown class 'os.system'; allowed: AdaGrad, Adam, RMSProp, SGD"),
    ({"optimizer": {"name": "FTRLProximal"}}, "unknown class 'FTRLProximal'"),
    ({"optimizer": {"name": "SGD", "momentum": 0.9}}, "SGD: unknown parameter 'momentum'"),
    ({"optimizer": {"name": "SGD", "lr": "fast"}}, "SGD.lr: expected float, int, got str"),
    ({"loss": {"name": "Squared"}}, "unknown class 'Squared'; allowed: Hinge, Log"),
])
def test_bad_parameter_values_are_rejected(params: dict[str, Any], needle: str) -> None:
    with pytest.raises(ModelSpecError) as err:
        build_model(lr(**params))
    assert needle in str(err.value)


def test_constructor_errors_become_spec_errors() -> None:
    # A value of the right type that the class itself refuses.
    with pytest.raises(ModelSpecError, match="PAClassifier: KeyError: 5"):
        build_model(settings({"name": "PAClassifier", "params": {"mode": 5}}))


@pytest.mark.parametrize(("steps", "needle"), [
    ((), "at least one step"),
    (({"name": "StandardScaler"},), "must be a classifier or an anomaly detector"),
    (({"name": "LogisticRegression"}, {"name": "GaussianNB"}), "LogisticRegression must be the last"),
    (({"name": "HalfSpaceTrees"}, {"name": "GaussianNB"}), "HalfSpaceTrees must be the last"),
    (({"name": "Nope"}, {"name": "GaussianNB"}), "unknown class 'Nope'"),
])
def test_pipeline_shape_is_checked(steps: tuple[dict[str, Any], ...], needle: str) -> None:
    with pytest.raises(ModelSpecError, match=needle):
        build_model(settings(*steps))


# -- every allowed class builds and runs -----------------------------------------------------

@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_each_classifier_builds_and_scores(name: str) -> None:
    model = build_model(settings({"name": "StandardScaler"}, {"name": name}))
    assert model.kind == "classifier"
    xs, ys = [x for x, _ in EVENTS], [y for _, y in EVENTS]
    model.learn_many(xs, ys)
    scores = model.predict_proba_many(xs)
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize("name", sorted(ANOMALY_DETECTORS))
def test_each_anomaly_detector_builds_and_scores(name: str) -> None:
    model = build_model(settings({"name": "MinMaxScaler"}, {"name": name}))
    assert model.kind == "anomaly"
    model.learn_many([x for x, _ in EVENTS])
    assert all(math.isfinite(s) for s in model.predict_proba_many(x for x, _ in EVENTS))


@pytest.mark.parametrize("name", sorted(PREPROCESSORS))
def test_each_preprocessor_builds_in_front_of_a_classifier(name: str) -> None:
    model = build_model(settings({"name": name}, {"name": "GaussianNB"}))
    for x, y in EVENTS:
        assert 0.0 <= model.predict_proba_one(x) <= 1.0
        model.learn_one(x, y)


def test_nested_optimizer_and_loss_are_built() -> None:
    model = build_model(lr(optimizer={"name": "Adam", "lr": 0.01}, loss={"name": "Log",
                                                                         "weight_pos": 5.0}))
    est = model.pipeline["LogisticRegression"]
    assert isinstance(est.optimizer, optim.Adam) and est.optimizer.learning_rate == 0.01
    assert est.loss.weight_pos == 5.0
    assert isinstance(build_model(lr(optimizer="AdaGrad")).pipeline["LogisticRegression"]
                      .optimizer, optim.AdaGrad)


def test_structured_parameters_are_allowed_where_the_signature_says_so() -> None:
    model = build_model(settings({"name": "HalfSpaceTrees", "params": {
        "seed": 1, "limits": {"a": [0.0, 10.0], "b": [-1.0, 1.0]}}}))
    assert model.pipeline["HalfSpaceTrees"].limits["a"] == [0.0, 10.0]
    tree = build_model(settings({"name": "HoeffdingTreeClassifier",
                                 "params": {"nominal_attributes": ["country"]}}))
    assert tree.pipeline["HoeffdingTreeClassifier"].nominal_attributes == ["country"]


def test_params_uses_rivers_introspection() -> None:
    params = build_model(lr(l2=0.25)).params()
    assert params["LogisticRegression"]["l2"] == 0.25
    assert set(params) == {"StandardScaler", "LogisticRegression"}


# -- OnlineModel behaviour -------------------------------------------------------------------

def test_classifier_needs_a_label_and_anomaly_ignores_it() -> None:
    with pytest.raises(ValueError, match="needs a label"):
        build_model(ModelSettings()).learn_one({"a": 1.0}, None)
    hst = build_model(settings({"name": "HalfSpaceTrees", "params": {"seed": 3}}))
    hst.learn_one({"a": 0.5}, None)
    hst.learn_one({"a": 0.5}, True)


def test_untrained_classifier_scores_are_defined() -> None:
    assert build_model(ModelSettings()).predict_proba_one({"a": 1.0}) == 0.5
    assert build_model(settings({"name": "GaussianNB"})).predict_proba_one({"a": 1.0}) == 0.0


class _NaNPipeline:
    def predict_proba_one(self, x: Any) -> dict[bool, float]:
        return {False: math.nan, True: math.nan}

    def score_one(self, x: Any) -> float:
        return math.inf


@pytest.mark.parametrize("kind", ["classifier", "anomaly"])
def test_non_finite_score_raises_model_output_error(kind: Any) -> None:
    model = OnlineModel(_NaNPipeline(), name="bad", kind=kind, spec_hash="")
    with pytest.raises(ModelOutputError) as err:
        model.predict_proba_one({"a": 1.0})
    assert isinstance(err.value, StreamAppError) and not err.value.retriable
    assert not math.isfinite(err.value.value)


def test_nan_reaching_a_real_model_raises_instead_of_returning_nan() -> None:
    model = build_model(settings({"name": "LogisticRegression"}))
    model.learn_one({"a": 1.0}, True)
    with pytest.raises(ModelOutputError, match="non-finite score: nan"):
        model.predict_proba_one({"a": math.nan})


# -- one_hot ---------------------------------------------------------------------------------

def test_one_hot_cases() -> None:
    got = one_hot({"n": 3, "f": 2.5, "t": True, "no": False, "s": "FR", "z": None, "neg": -1})
    assert got == {"n": 3.0, "f": 2.5, "t": 1.0, "no": 0.0, "s=FR": 1.0, "neg": -1.0}
    assert all(type(v) is float for v in got.values())


def test_one_hot_slow_path_and_refusal() -> None:
    import numpy as np

    numpy_scalars: dict[str, Any] = {"a": np.float32(1.5), "b": np.int64(2), "c": np.bool_(True)}
    assert one_hot(numpy_scalars) == {
        "a": 1.5, "b": 2.0, "c": 1.0}
    with pytest.raises(TypeError, match="feature 'l'"):
        one_hot({"l": [1, 2]})  # type: ignore[dict-item]


plain = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))


@given(st.dictionaries(st.text(max_size=8), plain, max_size=12))
def test_one_hot_properties(x: dict[str, Any]) -> None:
    out = one_hot(x)
    assert all(type(v) is float and math.isfinite(v) for v in out.values())
    assert one_hot(out) == out  # idempotent: the learn path may encode a stored snapshot again
    assert len(out) <= sum(1 for v in x.values() if v is not None)


def test_phishing_features_pass_through_one_hot_unchanged() -> None:
    for x, _ in datasets.Phishing():
        assert one_hot(x) == x


# -- parity with River's own evaluation ------------------------------------------------------

def test_parity_with_progressive_val_score_on_phishing() -> None:
    model = build_model(ModelSettings())
    pm = PrequentialMetrics(window=10_000)
    for x, y in datasets.Phishing():
        x = one_hot(x)
        pm.update(y, model.predict_proba_one(x), ModelSettings().threshold)
        model.learn_one(x, y)

    def reference(metric: Any) -> float:
        pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        return float(evaluate.progressive_val_score(datasets.Phishing(), pipeline, metric).get())

    snap = pm.snapshot()
    assert snap["n"] == 1250
    assert snap["cumulative"]["accuracy"] == reference(metrics.Accuracy())
    assert snap["cumulative"]["roc_auc"] == reference(metrics.ROCAUC())
    assert snap["cumulative"]["log_loss"] == reference(metrics.LogLoss())
    assert snap["cumulative"]["f1"] == reference(metrics.F1())
    assert snap["rolling"]["accuracy"] == snap["cumulative"]["accuracy"]
