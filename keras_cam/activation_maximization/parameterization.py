"""What gradient ascent optimizes: the pattern's pixels, or a spectrum that favours natural-image statistics.

Natural images have most of their energy at low spatial frequencies (amplitude falling about as 1/f) and
strongly correlated colour channels. Ascending on pixels treats every frequency alike, and the gradient of a
deep layer is dominated by high frequencies, so pixel ascent mostly finds high-frequency noise the network
happens to respond to. `FourierImage` instead optimizes the coefficients of the image's real 2-D spectrum,
scaled by 1/frequency, in a decorrelated colour basis (the "preconditioning" of Olah et al., "Feature
Visualization", Distill 2017, and Lucid): low frequencies move the image most, so large, smooth, coloured
structures form first. A sigmoid maps the result into the model's value range, so every pattern is a valid
input.

A parameterization says how a batch of patterns starts (`start`, one image's parameters from the seed, the
filter and the copy), how parameters become images (`decode`, in `keras.ops`), and how a gradient step
updates its state (`initial_state`, `update`).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import keras
import numpy as np

__all__ = ["COLOR_BASIS", "PARAMS", "FourierImage", "PixelImage", "irfft2", "make_param", "spectrum_scale"]

#: The square root of the RGB colour covariance of natural images (ImageNet), from its SVD, as Lucid
#: publishes it, with its columns scaled so the longest has norm 1: decorrelated coefficients times this
#: basis give RGB with natural colour correlations (mostly luminance, less colour contrast).
_COLOR_CORRELATION_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
COLOR_BASIS = _COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(_COLOR_CORRELATION_SQRT, axis=0))
_GRAD_EPS = 1e-5
# Adam's constants; its epsilon is relative to the gradient's root mean square (see `FourierImage.update`).
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-3


def irfft2(real: Any, imag: Any, hw: Tuple[int, int]) -> Any:
    """`numpy.fft.irfft2` over the last two axes, from the real and imaginary parts (..., H, W // 2 + 1).

    keras.ops offers a 1-D `fft` and `irfft` along the last axis on every backend, and no `irfft2`: the
    inverse transform along H is a forward `fft` with the real and imaginary parts swapped on the way in and
    out, divided by H; then `irfft` along W. Differentiable and compiled like any other op.

    Args:
        real, imag: float tensors or arrays (..., H, W // 2 + 1).
        hw: the image size `(H, W)` (W is needed: odd and even widths share a half-spectrum length).

    Returns:
        float32 (..., H, W).

    Example:

    >>> import numpy as np
    >>> spectrum = np.random.default_rng(0).normal(size=(2, 6, 5)) + 1j
    >>> image = irfft2(spectrum.real.astype("float32"), spectrum.imag.astype("float32"), (6, 8))
    >>> bool(np.allclose(keras.ops.convert_to_numpy(image), np.fft.irfft2(spectrum, s=(6, 8)), atol=1e-5))
    True
    """
    ops = keras.ops
    rank = len(real.shape)
    swap = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    return _irfft2_of_transposed(ops.transpose(real, swap) / hw[0], ops.transpose(imag, swap) / hw[0], hw[1])


def _irfft2_of_transposed(real: Any, imag: Any, width: int) -> Any:
    """H * irfft2 of a spectrum given transposed, (..., W // 2 + 1, H): the layout `FourierImage` keeps,
    which needs no transposes before the first transform and folds the 1 / H into its scale."""
    ops = keras.ops
    # ifft(z) * n = swap(fft(swap(z))), swap exchanging the real and imaginary parts: no negations.
    fft_real, fft_imag = ops.fft((imag, real))
    rank = len(real.shape)
    swap = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    return ops.irfft((ops.transpose(fft_imag, swap), ops.transpose(fft_real, swap)), fft_length=width)


def spectrum_scale(hw: Tuple[int, int], decay: float = 1.0) -> np.ndarray:
    """float32 (H, W // 2 + 1): `1 / frequency**decay` (in cycles per pixel, floored at 1 / max(H, W)) times
    sqrt(H * W), which makes the inverse transform of unit coefficients unit-sized whatever the image size."""
    fy = np.fft.fftfreq(hw[0])[:, None]
    fx = np.fft.rfftfreq(hw[1])[None, :]
    frequency = np.sqrt(fy**2 + fx**2)
    return (np.sqrt(hw[0] * hw[1]) / np.maximum(frequency, 1.0 / max(hw)) ** decay).astype(np.float32)


class PixelImage:
    """The pattern is its pixels (the keras.io recipe).

    The start is grey with noise, `128 + 20 * uniform` on the 0..255 scale mapped to the value range; each
    step adds the gradient divided by its root mean square (+1e-5), per image, times the step size (by
    default 1/255 of the range). Pixels are unbounded: `visualize` standardizes them for display.
    """

    name = "pixel"

    def __init__(self, value_range: Tuple[float, float], hw: Tuple[int, int], channels: int) -> None:
        self.value_range, self.hw, self.channels = value_range, tuple(hw), int(channels)
        self.default_step_size = (value_range[1] - value_range[0]) / 255.0

    def start(self, seed: int, filter_index: int, copy: int = 0) -> np.ndarray:
        low, high = self.value_range
        # Copy 0 draws what a single pattern always drew, so one pattern per filter is unchanged.
        key = [seed, 1, filter_index] + ([copy] if copy else [])
        noise = np.random.default_rng(key).random((self.hw[0], self.hw[1], self.channels))
        return (low + (high - low) * (128.0 + 20.0 * noise) / 255.0).astype(np.float32)

    def decode(self, params: Any) -> Any:
        return params

    def initial_state(self, params: Any) -> Tuple[Any, ...]:
        return (params,)

    def update(self, state: Tuple[Any, ...], grads: Any, t: Any, step_size: Any) -> Tuple[Any, ...]:
        axes = tuple(range(1, len(grads.shape)))
        rms = keras.ops.sqrt(keras.ops.mean(keras.ops.square(grads), axis=axes, keepdims=True))
        return (state[0] + step_size * grads / (rms + _GRAD_EPS),)


class FourierImage:
    """The pattern is the inverse real FFT of learned coefficients scaled by 1/frequency**`decay`, in a
    decorrelated colour basis (3 channels), through a sigmoid into the value range.

    Parameters per image: float32 (2, C, W // 2 + 1, H), the real and imaginary parts of the spectrum
    transposed (frequencies along x first), starting as normal noise with standard deviation 0.01 (an
    almost uniform mid-grey image), optimized with Adam.
    """

    name = "fourier"
    #: Adam's learning rate, in coefficient units (Lucid's).
    default_step_size = 0.05
    #: Coefficients are scaled by 1 / frequency**decay. Lucid uses 1 / frequency; on the demo CNN and a
    #: VGG-style CNN trained on make_shapes that left deep-layer patterns smoother than the training images
    #: (high-frequency share 0.09-0.17 against 0.26), and 0.65 left shallow ones too rough (0.38) and less
    #: robust (benchmarks/bench_filter_quality.py; 0.8 is the compromise).
    decay = 0.8
    _START_SD = 0.01

    def __init__(self, value_range: Tuple[float, float], hw: Tuple[int, int], channels: int) -> None:
        self.value_range, self.hw, self.channels = value_range, tuple(hw), int(channels)
        self.scale = spectrum_scale(self.hw, self.decay)
        # Transposed like the parameters, with irfft2's 1 / H folded in.
        self._scale = np.ascontiguousarray(self.scale.T / self.hw[0])

    def start(self, seed: int, filter_index: int, copy: int = 0) -> np.ndarray:
        shape = (2, self.channels) + self._scale.shape
        rng = np.random.default_rng([seed, 3, filter_index, copy])
        return (self._START_SD * rng.standard_normal(shape)).astype(np.float32)

    def decode(self, params: Any) -> Any:
        ops = keras.ops
        h, w = self.hw
        # `unstack`, not `spectrum[:, 0]`: TensorFlow's gradient of a strided slice costs more than the FFTs.
        real, imag = ops.unstack(ops.multiply(params, ops.convert_to_tensor(self._scale)), axis=1)
        image = _irfft2_of_transposed(real, imag, w)  # (N, C, H, W)
        if self.channels == 3:  # one (3, 3) @ (3, H * W) product per image: faster than an einsum on JAX
            image = ops.matmul(ops.convert_to_tensor(COLOR_BASIS), ops.reshape(image, (-1, 3, h * w)))
            image = ops.reshape(image, (-1, 3, h, w))
        low, high = self.value_range
        return low + (high - low) * ops.sigmoid(ops.transpose(image, (0, 2, 3, 1)))

    def initial_state(self, params: Any) -> Tuple[Any, ...]:
        zeros = keras.ops.zeros_like(params)
        return (params, zeros, zeros)

    def update(self, state: Tuple[Any, ...], grads: Any, t: Any, step_size: Any) -> Tuple[Any, ...]:
        """Adam (ascending), as Lucid optimizes spectra, on the gradient divided by its root mean square.

        Each coefficient's step is normalized by its own gradient history, so it moves the image by about its
        1/frequency scale and patterns get a natural-image spectrum (one step size for all, the pixel rule,
        would weigh low frequencies by 1/f^2 and leave them too smooth). Dividing by the RMS first makes the
        step independent of the objective's scale, and an epsilon of 1e-3 relative to it keeps coefficients
        whose gradient is a thousandth of the others' (round-off, colours a filter ignores) from taking full
        steps: with Adam's usual 1e-8 those became coloured specks.
        """
        ops = keras.ops
        params, m, v = state
        axes = tuple(range(1, len(grads.shape)))
        grads = grads / (ops.sqrt(ops.mean(ops.square(grads), axis=axes, keepdims=True)) + 1e-30)
        m = _BETA1 * m + (1.0 - _BETA1) * grads
        v = _BETA2 * v + (1.0 - _BETA2) * ops.square(grads)
        # Adam's bias corrections, on scalars: m_hat / (sqrt(v_hat) + eps) without two more full-size ops.
        correction = ops.sqrt(1.0 - ops.power(_BETA2, t))
        rate = step_size * correction / (1.0 - ops.power(_BETA1, t))
        return (params + rate * m / (ops.sqrt(v) + _ADAM_EPS * correction), m, v)


PARAMS: Dict[str, type] = {cls.name: cls for cls in (PixelImage, FourierImage)}


def make_param(name: str, value_range: Tuple[float, float], hw: Tuple[int, int], channels: int) -> Any:
    """The parameterization called `name` (`"pixel"` or `"fourier"`) for `channels`-channel images of size
    `hw`; one clear `ValueError` for another name."""
    if name not in PARAMS:
        raise ValueError(f"`param` must be one of {', '.join(repr(p) for p in PARAMS)}, got {name!r}.")
    return PARAMS[name](value_range, hw, channels)
