"""`AscentOptions`: how `FilterVisualizer` ascends, validated once into a frozen dataclass."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Optional

from keras_cam._validation import check_int, check_number
from keras_cam.activation_maximization.objectives import Objective
from keras_cam.activation_maximization.parameterization import PARAMS
from keras_cam.activation_maximization.transforms import resolve_transforms

__all__ = ["AscentOptions"]


@dataclasses.dataclass(frozen=True)
class AscentOptions:
    """How `FilterVisualizer.optimize` / `visualize` ascend; validated when created.

    Attributes:
        steps: gradient ascent steps (per octave).
        step_size: the step. `None`: the parameterization's default: pixel, 1/255 of the value range times
            the gradient divided by its root mean square; fourier, Adam's learning rate 0.05.
        seed: seeds the starts (per filter) and the random transforms; same seed, same patterns.
        batch_size: patterns optimized together (memory bound). `None`: about 2M input values per batch
            (all 64 filters of a 64x64 grid at once). Results do not depend on it.
        param: `"fourier"` (default): the pattern is the inverse FFT of 1/frequency-scaled coefficients in a
            decorrelated colour basis, through a sigmoid into the value range, which favours the smooth,
            coloured structures of natural images; `"pixel"`: the pixels themselves (the keras.io recipe,
            the default before). See `keras_cam.activation_maximization.parameterization`.
        transforms: random transforms each step applies before the model sees the pattern, so the pattern
            must survive them: `"default"` (a shift by 1/16 of the size, a zoom of +-10 %, a turn of +-10
            degrees), `()` for none, or a list of `Jitter`, `Scale`, `Rotate` objects, names, or
            `(name, *args)` tuples, e.g. `["jitter", ("scale", 0.8, 1.2), ("rotate", 20)]`.
        objective: what each pattern maximizes, an `Objective`: `Channel()`, `Neuron()`, `Direction(v)`, a
            weighted sum of them, or `Diversity(n)` for n patterns per filter. `None`: `Channel()`, the mean
            of the filter's activation (a rank-2 output: the unit's value).
        jitter: each step also rolls the pattern by a random whole-pixel shift of up to `jitter` pixels in y
            and x (coordinates wrap around), with or without `transforms`. 0: off.
        total_variation: weight of a total variation penalty (mean squared difference of neighbouring
            pixels of the image the model sees) subtracted from the loss; favours smooth patterns. 0: off.
        l2: weight of an L2 penalty (mean squared distance to mid-grey); bounds contrast. 0: off.
        octaves: > 1 optimizes pixels at `octaves` scales, coarse to fine (each `octave_scale` times larger,
            the last at `size`): a coarse image is upsampled (bilinear) before the model sees it, so large
            structures form first. 1: off. Only with `param="pixel"` (the Fourier parameterization already
            forms large structures first).
        octave_scale: size ratio between octaves.
        border: layer-output pixels left out of the loss on each side (they see the padding).
        verbose: 1 shows a `keras.utils.Progbar` with the mean loss; 0 is silent.

    `tv_weight` and `l2_weight`, the earlier names, are accepted by `of` (and so by `visualize`) as aliases
    of `total_variation` and `l2`.
    """

    steps: int = 30
    step_size: Optional[float] = None
    seed: int = 0
    batch_size: Optional[int] = None
    param: str = "fourier"
    transforms: Any = "default"
    objective: Optional[Objective] = None
    jitter: int = 2
    total_variation: float = 0.0
    l2: float = 0.0
    octaves: int = 1
    octave_scale: float = 1.5
    border: int = 2
    verbose: int = 0

    ALIASES: ClassVar[Dict[str, str]] = {"tv_weight": "total_variation", "l2_weight": "l2"}

    def __post_init__(self) -> None:
        if self.param not in PARAMS:
            raise ValueError(f"`param` must be one of {', '.join(map(repr, PARAMS))}, got {self.param!r}.")
        if self.objective is not None and not isinstance(self.objective, Objective):
            raise ValueError("`objective` must be None or an Objective (Channel(), Neuron(), Direction(v), "
                             f"Diversity(n), or a weighted sum of them), got {self.objective!r}.")
        checked = {
            "steps": check_int("steps", self.steps, 0),
            "step_size": (None if self.step_size is None
                          else check_number("step_size", self.step_size, 0, strict=True)),
            "seed": check_int("seed", self.seed, 0),
            "batch_size": None if self.batch_size is None else check_int("batch_size", self.batch_size, 1),
            "transforms": resolve_transforms(self.transforms),
            "jitter": check_int("jitter", self.jitter, 0),
            "total_variation": check_number("total_variation", self.total_variation, 0.0),
            "l2": check_number("l2", self.l2, 0.0),
            "octaves": check_int("octaves", self.octaves, 1),
            "octave_scale": check_number("octave_scale", self.octave_scale, 1.0),
            "border": check_int("border", self.border, 0),
            "verbose": check_int("verbose", self.verbose, 0),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.octaves > 1 and self.param != "pixel":
            raise ValueError(f"octaves={self.octaves} works with param='pixel' only: the '{self.param}' "
                             "parameterization forms large structures first by itself. Pass param='pixel' "
                             "to use octaves, or leave octaves=1.")

    @classmethod
    def of(cls, options: Dict[str, Any]) -> "AscentOptions":
        """Options from keyword arguments (with the aliases); an unknown name is one clear `ValueError`."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in names and k not in cls.ALIASES]
        if unknown:
            raise ValueError(f"Unknown ascent option '{unknown[0]}'; the options are {', '.join(names)} "
                             f"(and the aliases {', '.join(cls.ALIASES)}).")
        values = dict(options)
        for alias, name in cls.ALIASES.items():
            if alias in values:
                if name in values:
                    raise ValueError(f"Pass `{name}` or its alias `{alias}`, not both.")
                values[name] = values.pop(alias)
        return cls(**values)

    @property
    def tv_weight(self) -> float:
        """Alias of `total_variation`."""
        return self.total_variation

    @property
    def l2_weight(self) -> float:
        """Alias of `l2`."""
        return self.l2
