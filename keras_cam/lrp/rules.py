"""LRP rules: how a layer hands the relevance of its outputs down to its inputs.

A rule is zennit's `BasicHook` written as data (docs/architecture.md, "Relevance propagation"): a list of
terms, each an input modifier `m_k` and a parameter modifier (kernel and bias), and the multipliers `c_k`
the terms' outputs give. For a layer `z = f(x; W, b)` that is linear in `x`,

    R_in = sum_k m_k(x) * J_k^T (c_k * R_out),   J_k = d f(x; W_k, b_k) / dx,

where `W_k, b_k` are the modified parameters. `backward.py` builds that as a modified backward pass.
Every rule here is zennit's definition (same terms, same stabilizer), so a composite gives zennit's numbers.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, List, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam._validation import check_number

ops = keras.ops


def stabilize(z: Any, epsilon: float) -> Any:
    """`z + epsilon * sign(z)` with sign(0) = +1 (zennit's `Stabilizer`): never 0 for `epsilon > 0`."""
    # sign(sign(z) + 0.5) is sign(z) with sign(0) = +1 (also for -0.0, as zennit's `z >= 0`): elementwise
    # arithmetic only, where a select of two constants costs 15x a multiplication in PyTorch's CPU kernels
    # (docs/architecture.md, "Relevance propagation": cost).
    return z + ops.sign(ops.sign(z) + 0.5) * epsilon


def safe_inverse(z: Any) -> Any:
    """`1 / z`, 0 where `z` is 0 (LRP-0: a unit with no output hands no relevance down)."""
    zero = ops.equal(z, 0)
    return ops.where(zero, ops.zeros_like(z), 1.0 / ops.where(zero, ops.ones_like(z), z))


def stabilized_inverse(z: Any, epsilon: float) -> Any:
    """`1 / stabilize(z, epsilon)`; with `epsilon = 0`, `safe_inverse(z)` (a stabilized `z` is never 0)."""
    return 1.0 / stabilize(z, epsilon) if epsilon > 0 else safe_inverse(z)


# -- parameter modifiers: (kernel or bias) -> modified; `None` (absent) stays `None` --------------------------

def _keep(p: Any) -> Any:
    return p


def _positive(p: Any) -> Any:
    return ops.relu(p)


def _negative(p: Any) -> Any:
    return ops.minimum(p, 0.0)


def _square(p: Any) -> Any:
    return p * p


def _ones(p: Any) -> Any:
    return ops.ones_like(p)


def _gamma(gamma: float, part: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda p: p + gamma * part(p)


class Term:
    """One term of a rule: the input modifier and the kernel and bias modifiers (`bias=None`: no bias)."""

    def __init__(self, inputs: Callable[[Any], Any], kernel: Callable[[Any], Any] = _keep,
                 bias: Optional[Callable[[Any], Any]] = _keep) -> None:
        self.inputs, self.kernel, self.bias = inputs, kernel, bias

    def params(self, kernels: Sequence[Any], bias: Any) -> Tuple[List[Any], Any]:
        k = [None if w is None else self.kernel(w) for w in kernels]
        b = None if bias is None or self.bias is None else self.bias(bias)
        return k, b


def _identity(x: Any) -> Any:
    return x


def _clamp_positive(x: Any) -> Any:
    return ops.relu(x)


def _clamp_negative(x: Any) -> Any:
    return ops.minimum(x, 0.0)


#: Input modifiers whose term vanishes on a non-negative input (after a ReLU): such terms are skipped there.
VANISH_ON_NONNEGATIVE = (_clamp_negative,)
#: Input modifiers that are the identity on a non-negative input.
KEEP_ON_NONNEGATIVE = (_clamp_positive,)


def _ones_like(x: Any) -> Any:
    return ops.ones_like(x)


class Rule:
    """Base of the LRP rules. A rule is one small class: its `terms` and its `multipliers`.

    `terms()` lists the (input modifier, parameter modifier) pairs; `multipliers(outputs, z)` gives, from the
    terms' outputs and the layer's own pre-activation output `z`, the factor `c_k` each term's backward pass
    is scaled by (None: the term only informs the others). `identity` is the index of a term that is the
    layer itself (unmodified input and parameters), whose output then doubles as the forward value.
    `needs_params`: the rule modifies weights, so it applies to layers whose weights keras-cam knows
    (Dense, convolutions, pooling).
    """

    identity: Optional[int] = None
    needs_params: bool = True

    def terms(self) -> List[Term]:
        raise NotImplementedError

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        raise NotImplementedError

    def key(self) -> tuple:
        """What the compiled functions depend on (class and parameters)."""
        return (type(self).__name__,) + tuple(sorted(vars(self).items()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: Any) -> bool:
        return type(self) is type(other) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())


class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015): `R_i = x_i w_ij / (z_j + eps sign(z_j)) R_j`, bias included in `z`.

    `Epsilon(0)` is LRP-0 (a unit with `z_j = 0` hands nothing down). On a network of linear layers and
    ReLUs without biases LRP-0 is conservative: the input relevance sums to the explained logit.

    Args:
        epsilon: the stabilizer added to `z` with `z`'s sign (1e-6 by default, zennit's).

    Example:

    ```python
    import keras_cam as kc
    rule = kc.lrp.Epsilon(0.25)
    ```
    """

    identity = 0
    needs_params = False  # the layer itself, differentiated: any layer (also one keras-cam does not know)

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = check_number("epsilon", epsilon, 0.0)

    def terms(self) -> List[Term]:
        return [Term(_identity)]

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        return [stabilized_inverse(outputs[0], self.epsilon)]


class Zero(Epsilon):
    """LRP-0 (Bach et al. 2015): `Epsilon(0)`, the plain redistribution in proportion to `x_i w_ij`."""

    def __init__(self) -> None:
        super().__init__(0.0)


class Norm(Epsilon):
    """zennit's `Norm`: relevance in proportion to each input's share of the output, with a small stabilizer;
    for layers without weights (average pooling, Add). Equal to `Epsilon(stabilizer)`."""

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)


class ZPlus(Rule):
    """LRP-z+ (Bach et al. 2015; Montavon et al. 2017): only the positive contributions `(x_i w_ij)^+`.

    zennit's definition, which allows negative inputs: `x+ w+ (+ b+)` and `x- w-` are the positive
    contributions. Equal to `AlphaBeta(1, 0)`.

    Args:
        stabilizer: added to the denominator with its sign (1e-6).
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = check_number("stabilizer", stabilizer, 0.0)

    def terms(self) -> List[Term]:
        return [Term(_clamp_positive, _positive, _positive), Term(_clamp_negative, _negative, None)]

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        c = stabilized_inverse(outputs[0] + outputs[1], self.stabilizer)
        return [c, c]


class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015): `alpha` times the positive and `beta` times the negative
    contributions' shares, `alpha - beta = 1`.

    Args:
        alpha, beta: non-negative, `alpha - beta = 1` (2 and 1 by default).
        stabilizer: added to each denominator with its sign (1e-6).
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        self.alpha = check_number("alpha", alpha, 0.0)
        self.beta = check_number("beta", beta, 0.0)
        if abs(self.alpha - self.beta - 1.0) > 1e-9:
            raise ValueError(f"AlphaBeta needs alpha - beta = 1 (so relevance is conserved), got alpha={alpha}, "
                             f"beta={beta}; e.g. AlphaBeta(2, 1) or AlphaBeta(1, 0).")
        self.stabilizer = check_number("stabilizer", stabilizer, 0.0)

    def terms(self) -> List[Term]:
        return [Term(_clamp_positive, _positive, _positive), Term(_clamp_negative, _negative, None),
                Term(_clamp_positive, _negative, _negative), Term(_clamp_negative, _positive, None)]

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        positive = stabilized_inverse(outputs[0] + outputs[1], self.stabilizer) * self.alpha
        negative = stabilized_inverse(outputs[2] + outputs[3], self.stabilizer) * -self.beta
        return [positive, positive, negative, negative]


class Gamma(Rule):
    """LRP-gamma (Montavon et al. 2019), generalized to negative inputs as zennit does: the weights' part of
    the output's sign is favoured by `gamma`. Units with `z > 0` redistribute over `x+ (w + gamma w+)` and
    `x- (w + gamma w-)`; units with `z < 0` over `x+ (w + gamma w-)` and `x- (w + gamma w+)`.

    Args:
        gamma: how much the weights of the output's sign are favoured (0.25 by default).
        stabilizer: added to each denominator with its sign (1e-6).
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        self.gamma = check_number("gamma", gamma, 0.0)
        self.stabilizer = check_number("stabilizer", stabilizer, 0.0)

    def terms(self) -> List[Term]:
        up, down = _gamma(self.gamma, _positive), _gamma(self.gamma, _negative)
        return [Term(_clamp_positive, up, up), Term(_clamp_negative, down, None),
                Term(_clamp_positive, down, down), Term(_clamp_negative, up, None)]

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        sign = ops.sign(z)  # the masks z > 0 and z < 0 as relu(+-sign): arithmetic, no boolean casts
        positive = ops.relu(sign) * stabilized_inverse(outputs[0] + outputs[1], self.stabilizer)
        negative = ops.relu(-sign) * stabilized_inverse(outputs[2] + outputs[3], self.stabilizer)
        return [positive, positive, negative, negative]


class _Proportional(Rule):
    """A rule of one modified term: relevance in proportion to that term's contributions (Flat, WSquare)."""

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = check_number("stabilizer", stabilizer, 0.0)

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        return [stabilized_inverse(outputs[0], self.stabilizer)]


class Flat(_Proportional):
    """LRP-flat (Lapuschkin et al. 2019): relevance spread evenly over each output's receptive field (inputs and
    weights taken as 1, no bias); for the first layer.

    Args:
        stabilizer: added to the denominator with its sign (1e-6).
    """

    def terms(self) -> List[Term]:
        return [Term(_ones_like, _ones, None)]


class WSquare(_Proportional):
    """LRP-w^2 (Montavon et al. 2017): relevance in proportion to the squared weights, whatever the input
    (zennit squares the bias too); for a first layer whose input is not bounded.

    Args:
        stabilizer: added to the denominator with its sign (1e-6).
    """

    def terms(self) -> List[Term]:
        return [Term(_ones_like, _square, _square)]


class ZBox(Rule):
    """LRP-z^B (Montavon et al. 2017) for the first layer of a bounded input `low <= x <= high`:
    `R_i = (x_i w_ij - l_i w+_ij - h_i w-_ij) / sum_i (...) R_j`.

    Args:
        low, high: the lowest and highest possible input values: numbers, or arrays that broadcast to one
            input in its layout (e.g. one value per channel).
        stabilizer: added to the denominator with its sign (1e-6).
    """

    def __init__(self, low: Any = 0.0, high: Any = 1.0, stabilizer: float = 1e-6) -> None:
        self._low = self._bound("low", low)
        self._high = self._bound("high", high)
        if np.any(self._low > self._high):
            raise ValueError("ZBox needs low <= high everywhere; pass the lowest and highest input values.")
        self.stabilizer = check_number("stabilizer", stabilizer, 0.0)

    @staticmethod
    def _bound(name: str, value: Any) -> np.ndarray:
        try:
            array = np.array(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"ZBox `{name}` must be a number or an array of numbers, got "
                             f"{type(value).__name__}.") from None
        if not np.all(np.isfinite(array)):
            raise ValueError(f"ZBox `{name}` has NaN or infinite values; pass finite bounds.")
        return array

    def key(self) -> tuple:
        digest = [hashlib.sha1(a.tobytes()).hexdigest() + str(a.shape) for a in (self._low, self._high)]
        return (type(self).__name__, self.stabilizer, *digest)

    def __repr__(self) -> str:
        return f"ZBox(low={self._low.tolist()!r}, high={self._high.tolist()!r}, stabilizer={self.stabilizer})"

    def terms(self) -> List[Term]:
        low, high = self._low, self._high
        return [Term(_identity),
                Term(lambda x: ops.zeros_like(x) + ops.convert_to_tensor(low, x.dtype), _positive, _positive),
                Term(lambda x: ops.zeros_like(x) + ops.convert_to_tensor(high, x.dtype), _negative, _negative)]

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        c = stabilized_inverse(outputs[0] - outputs[1] - outputs[2], self.stabilizer)
        return [c, -c, -c]


class Pass(Rule):
    """Relevance passes unchanged from the output to the input (activations, dropout, normalization that is
    not folded): the layer must keep its input's shape."""

    needs_params = False

    def __init__(self) -> None:
        pass

    def terms(self) -> List[Term]:
        return []

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        return []


# -- transformers (AttnLRP) ------------------------------------------------------------------------------------

class UniformProduct(Epsilon):
    """AttnLRP's uniform rule (Achtibat et al. 2024) for a product of two inputs, such as attention's
    `softmax(q k^T) v`: the epsilon rule towards each operand with the other held constant, halved, so the two
    operands share each output's relevance equally (the two shares add up to it).

    Args:
        epsilon: the stabilizer (1e-6).
    """

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        return [0.5 * stabilized_inverse(outputs[0], self.epsilon)]


class LayerNorm(Epsilon):
    """LN-rule for LayerNormalization (Ali et al. 2022; AttnLRP): the division by the standard deviation is held
    constant, which leaves a linear map (centring, scale, offset) that gets the epsilon rule. Without an offset
    (`center=False`) relevance is conserved.

    Args:
        epsilon: the stabilizer (1e-6).
    """


class AttnLRP(Rule):
    """AttnLRP (Achtibat et al. 2024) for a `keras.layers.MultiHeadAttention`: its query, key, value and output
    projections get the composite's Dense rule, the two products (queries with keys, attention weights with
    values) the uniform rule, and the softmax the epsilon rule at its input, `R_in = s_in * (R - a sum(R))`
    (the attention weights `a` held, Proposition 3.1 of the paper). The scaling by `1 / sqrt(key_dim)` passes
    relevance unchanged.

    Args:
        epsilon: the stabilizer of the products and the softmax (1e-6).
    """

    needs_params = False

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = check_number("epsilon", epsilon, 0.0)

    def terms(self) -> List[Term]:  # applied by `keras_cam/lrp/transformers.py`, not as terms
        return []

    def multipliers(self, outputs: List[Any], z: Any) -> List[Optional[Any]]:
        return []
