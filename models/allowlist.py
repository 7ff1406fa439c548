"""The River classes a config may name, and the checks on the parameters it may pass them.

Nothing here turns a string into code: a step's ``name`` is a key in one of the dicts below, and
its ``params`` are plain data checked against the class's own signature before the class is
called. Only two parameters take a nested spec, ``optimizer`` and ``loss``, each resolved
through its own allow-list.

>>> sorted(CLASSIFIERS)[:3]
['ALMAClassifier', 'ARFClassifier', 'GaussianNB']
>>> instantiate("SGD", {"lr": 0.05}, OPTIMIZERS)
SGD({'lr': Constant({'learning_rate': 0.05}), 'n_iterations': 0})
>>> instantiate("SGD", {"momentum": 0.9}, OPTIMIZERS)
Traceback (most recent call last):
...
stream_app.errors.ModelSpecError: SGD: unknown parameter 'momentum'; accepted: lr
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

from river import anomaly, forest, linear_model, naive_bayes, optim, preprocessing, tree

from stream_app.errors import ModelSpecError

__all__ = [
    "ANOMALY_DETECTORS",
    "CLASSIFIERS",
    "LOSSES",
    "OPTIMIZERS",
    "PREPROCESSORS",
    "allowed_step_names",
    "instantiate",
]

Table = Mapping[str, type]

PREPROCESSORS: Table = {
    "StandardScaler": preprocessing.StandardScaler,
    "MinMaxScaler": preprocessing.MinMaxScaler,
    "MaxAbsScaler": preprocessing.MaxAbsScaler,
    "OneHotEncoder": preprocessing.OneHotEncoder,
}
CLASSIFIERS: Table = {
    "LogisticRegression": linear_model.LogisticRegression,
    "PAClassifier": linear_model.PAClassifier,
    "Perceptron": linear_model.Perceptron,
    "ALMAClassifier": linear_model.ALMAClassifier,
    "HoeffdingTreeClassifier": tree.HoeffdingTreeClassifier,
    "HoeffdingAdaptiveTreeClassifier": tree.HoeffdingAdaptiveTreeClassifier,
    "ARFClassifier": forest.ARFClassifier,
    "GaussianNB": naive_bayes.GaussianNB,
}
#: HalfSpaceTrees assumes features in [0, 1]: put a MinMaxScaler before it (or pass ``limits``).
ANOMALY_DETECTORS: Table = {
    "HalfSpaceTrees": anomaly.HalfSpaceTrees,
    "OneClassSVM": anomaly.OneClassSVM,
}
OPTIMIZERS: Table = {
    "SGD": optim.SGD,
    "Adam": optim.Adam,
    "AdaGrad": optim.AdaGrad,
    "RMSProp": optim.RMSProp,
}
LOSSES: Table = {"Log": optim.losses.Log, "Hinge": optim.losses.Hinge}

#: parameters whose value is itself a spec, ``"Adam"`` or ``{"name": "Adam", "lr": 0.01}``
NESTED: Mapping[str, Table] = {"optimizer": OPTIMIZERS, "loss": LOSSES}

_SCALARS = (bool, int, float, str, type(None))
_TYPE_WORDS = {"bool": bool, "int": int, "float": float, "str": str, "list": list,
               "tuple": list, "set": list, "dict": dict, "None": type(None)}
_WORD = re.compile(r"\b(" + "|".join(_TYPE_WORDS) + r")\b")
_MAX_DEPTH = 3


def allowed_step_names() -> list[str]:
    """Every class name a pipeline step may use, sorted."""
    return sorted({**PREPROCESSORS, **CLASSIFIERS, **ANOMALY_DETECTORS})


def instantiate(name: str, params: Mapping[str, Any], table: Table) -> Any:
    """Build ``table[name](**params)`` after checking every parameter; raise ``ModelSpecError``."""
    cls = table.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ModelSpecError(f"unknown class {name!r}; allowed: {', '.join(sorted(table))}")
    if not isinstance(params, Mapping):
        raise ModelSpecError(f"{name}: params must be a table, got {type(params).__name__}")
    signature = _named_parameters(cls)
    kwargs = {key: _resolve(name, key, value, signature) for key, value in params.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, KeyError) as exc:  # the class refused a well-typed value
        raise ModelSpecError(f"{name}: {type(exc).__name__}: {exc}") from None


def _named_parameters(cls: type) -> dict[str, inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p for p in inspect.signature(cls).parameters.values() if p.kind in kinds}


def _resolve(owner: str, key: str, value: Any, signature: dict[str, inspect.Parameter]) -> Any:
    if key not in signature:
        accepted = ", ".join(signature) or "none"
        raise ModelSpecError(f"{owner}: unknown parameter {key!r}; accepted: {accepted}")
    if key in NESTED and value is not None:
        return _nested(owner, key, value)
    if not _is_plain(value, _MAX_DEPTH):
        raise ModelSpecError(
            f"{owner}.{key}: values must be numbers, strings, booleans, null, "
            f"or lists/tables of those; got {type(value).__name__}")
    accepted_types = _accepted_types(signature[key])
    if accepted_types and not _type_ok(value, accepted_types):
        names = ", ".join(sorted(t.__name__ for t in accepted_types))
        raise ModelSpecError(f"{owner}.{key}: expected {names}, got {type(value).__name__}")
    return value


def _nested(owner: str, key: str, value: Any) -> Any:
    if isinstance(value, str):
        return instantiate(value, {}, NESTED[key])
    if isinstance(value, Mapping) and "name" in value:
        params = {k: v for k, v in value.items() if k != "name"}
        return instantiate(value["name"], params, NESTED[key])
    raise ModelSpecError(
        f"{owner}.{key}: expected a name or a table with 'name' "
        f"(one of {', '.join(sorted(NESTED[key]))})")


def _is_plain(value: Any, depth: int) -> bool:
    if type(value) in _SCALARS:
        return True
    if depth == 0:
        return False
    if type(value) in (list, tuple):
        return all(_is_plain(v, depth - 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v, depth - 1) for k, v in value.items())
    return False


def _accepted_types(param: inspect.Parameter) -> set[type]:
    """Types a parameter takes, from its default's type and the words of its annotation."""
    accepted: set[type] = set()
    if param.default is not inspect.Parameter.empty and type(param.default) in _SCALARS:
        accepted.add(type(param.default))
    ann = param.annotation
    if ann is not inspect.Parameter.empty:
        text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
        accepted.update(_TYPE_WORDS[w] for w in _WORD.findall(text))
    return accepted


def _type_ok(value: Any, accepted: set[type]) -> bool:
    t = list if type(value) is tuple else type(value)
    return t in accepted or (t is int and float in accepted)
