"""Composites: which rule each layer gets, by name as zennit defines them, plus the user's own `rules`.

A composite maps layer kinds to rules, with a special rule for the first linear layer the input meets:

| name | convolutions | Dense | first layer |
|---|---|---|---|
| `epsilon` | Epsilon | Epsilon | - |
| `epsilon_plus` | ZPlus | Epsilon | - |
| `epsilon_plus_flat` | ZPlus | Epsilon | Flat (convolution or Dense) |
| `epsilon_gamma_box` | Gamma(0.25) | Epsilon | ZBox(low, high) (convolution) |
| `epsilon_alpha2_beta1` | AlphaBeta(2, 1) | Epsilon | - |
| `epsilon_alpha2_beta1_flat` | AlphaBeta(2, 1) | Epsilon | Flat (convolution or Dense) |

Every composite also has zennit's base map: activations and BatchNormalization that is not folded `Pass`,
average pooling and Add `Norm`. `epsilon` is not one of zennit's named composites: it is Epsilon on every
linear layer (Montavon et al. 2019's "LRP-epsilon everywhere" baseline).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras

from keras_cam import capture

from keras_cam._validation import close_matches
from keras_cam.lrp.raw_ops import operations as graph_operations
from keras_cam.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus

#: Layer kinds a composite maps (see `propagation.layer_kind`).
CONV, DENSE = "conv", "dense"


class Composite:
    """Rules by layer kind: `conv` (every convolution: 1-D/2-D/3-D, transposed, depthwise, separable) and
    `dense`, and `first` for the first convolution or Dense layer the input reaches (`first_kinds` say
    which kinds qualify).

    Args:
        conv, dense: the rules of convolutions and Dense layers.
        first: the rule of the first linear layer, or None.
        first_kinds: the kinds the first layer may be (`("conv", "dense")` or `("conv",)`).
        epsilon, stabilizer: recorded for messages; the rules carry their own values.

    Example:

    ```python
    import keras_cam as kc
    composite = kc.lrp.Composite(conv=kc.lrp.Gamma(0.5), dense=kc.lrp.Epsilon(0.1), first=kc.lrp.Flat())
    ```
    """

    def __init__(self, conv: Rule, dense: Rule, first: Optional[Rule] = None,
                 first_kinds: tuple = (CONV, DENSE), name: str = "custom") -> None:
        for label, rule in (("conv", conv), ("dense", dense), ("first", first)):
            if rule is not None and not isinstance(rule, Rule):
                raise ValueError(f"Composite `{label}` must be a kc.lrp rule (e.g. kc.lrp.Epsilon()), got "
                                 f"{type(rule).__name__}.")
        self.conv, self.dense, self.first = conv, dense, first
        self.first_kinds = tuple(first_kinds)
        self.name = name

    def rule_for(self, kind: str, first: bool) -> Rule:
        if first and self.first is not None and kind in self.first_kinds:
            return self.first
        return self.conv if kind == CONV else self.dense

    def key(self) -> tuple:
        return (self.name, self.conv.key(), self.dense.key(), None if self.first is None else self.first.key(),
                self.first_kinds)

    def __repr__(self) -> str:
        return f"Composite({self.name!r}, conv={self.conv!r}, dense={self.dense!r}, first={self.first!r})"


def _epsilon(epsilon: float = 1e-6, **_: Any) -> Composite:
    return Composite(Epsilon(epsilon), Epsilon(epsilon), name="epsilon")


def _epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6, **_: Any) -> Composite:
    return Composite(ZPlus(stabilizer), Epsilon(epsilon), name="epsilon_plus")


def _epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6, **_: Any) -> Composite:
    return Composite(ZPlus(stabilizer), Epsilon(epsilon), Flat(stabilizer), name="epsilon_plus_flat")


def _epsilon_gamma_box(epsilon: float = 1e-6, stabilizer: float = 1e-6, gamma: float = 0.25, low: Any = 0.0,
                       high: Any = 1.0, **_: Any) -> Composite:
    return Composite(Gamma(gamma, stabilizer), Epsilon(epsilon), ZBox(low, high, stabilizer), first_kinds=(CONV,),
                     name="epsilon_gamma_box")


def _epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6, **_: Any) -> Composite:
    return Composite(AlphaBeta(2, 1, stabilizer), Epsilon(epsilon), name="epsilon_alpha2_beta1")


def _epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6, **_: Any) -> Composite:
    return Composite(AlphaBeta(2, 1, stabilizer), Epsilon(epsilon), Flat(stabilizer),
                     name="epsilon_alpha2_beta1_flat")


COMPOSITES: Dict[str, Any] = {
    "epsilon": _epsilon,
    "epsilon_plus": _epsilon_plus,
    "epsilon_plus_flat": _epsilon_plus_flat,
    "epsilon_gamma_box": _epsilon_gamma_box,
    "epsilon_alpha2_beta1": _epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": _epsilon_alpha2_beta1_flat,
}


def available_composites() -> List[str]:
    """The composite names `kc.LRP(model, composite=...)` accepts."""
    return list(COMPOSITES)


def composite(name: Any, **options: Any) -> Composite:
    """A composite by name (`"epsilon_plus_flat"`, ...; "-" and case tolerant) or a `Composite` as is.

    Args:
        name: a name from `available_composites()` or a `Composite`.
        **options: `epsilon`, `stabilizer`; `gamma`, `low`, `high` for `epsilon_gamma_box` (the input's
            bounds for ZBox: 0 and 1 by default, for images in [0, 1]).

    Example:

    ```python
    import keras_cam as kc
    box = kc.lrp.composite("epsilon_gamma_box", low=-1.0, high=1.0)
    ```
    """
    if isinstance(name, Composite):
        return name
    if not isinstance(name, str):
        raise ValueError(f"`composite` must be a name ({', '.join(COMPOSITES)}) or a kc.lrp.Composite, got "
                         f"{type(name).__name__}.")
    key = name.lower().replace("-", "_").replace(" ", "_")
    if key not in COMPOSITES:
        near = close_matches(key, COMPOSITES)
        hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        raise ValueError(f"Unknown LRP composite '{name}'.{hint} Available: {', '.join(COMPOSITES)}.")
    return COMPOSITES[key](**options)


RuleKey = Any  # a layer name / path (str) or a Keras layer class


def check_rules(model: keras.layers.Layer, rules: Any) -> Tuple[Tuple[RuleKey, Rule], ...]:
    """The user's `rules` as a tuple of (key, rule), checked: keys are layer names or paths of `model`, or Keras
    layer classes; values are kc.lrp rules."""
    if rules is None:
        return ()
    if not isinstance(rules, dict):
        raise ValueError(f"`rules` must be a dict {{layer name or Keras layer class: kc.lrp rule}}, got "
                         f"{type(rules).__name__}.")
    refs = list(capture.iter_layers(model))
    names = {r.layer.name for r in refs} | {r.path for r in refs}
    for op, path in graph_operations(model, [(r.layer, r.path) for r in refs]):  # `a + b` in a graph
        names |= {op.name, path}
    checked = []
    for key, rule in rules.items():
        if not isinstance(rule, Rule):
            raise ValueError(f"`rules[{key!r}]` must be a kc.lrp rule (Epsilon, Gamma, ZPlus, AlphaBeta, Flat, "
                             f"WSquare, ZBox, Pass, LayerNorm, AttnLRP), got {type(rule).__name__}: {rule!r}.")
        if isinstance(key, str):
            if key not in names:
                near = close_matches(key, sorted(names))
                hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
                raise ValueError(f"`rules` names layer '{key}', which model '{model.name}' does not have.{hint}")
        elif not (isinstance(key, type) and issubclass(key, keras.layers.Layer)):
            raise ValueError(f"`rules` keys must be layer names or Keras layer classes (e.g. "
                             f"keras.layers.Conv2D), got {key!r}.")
        checked.append((key, rule))
    return tuple(checked)


def user_rule(layer: keras.layers.Layer, path: str, rules: Sequence[Tuple[RuleKey, Rule]]) -> Optional[Rule]:
    """The rule the user gave `layer` (at `path`) in `rules`, by name or path first, then by class; or None."""
    for key, rule in rules:  # names first: the more specific choice wins
        if isinstance(key, str) and key in (layer.name, path):
            return rule
    for key, rule in rules:
        if isinstance(key, type) and isinstance(layer, key):
            return rule
    return None
