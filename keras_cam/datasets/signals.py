"""Synthetic 1-D signals with one class motif each, and masks marking it: offline data to score 1-D CAMs.

Each signal is a slow random drift plus white noise, a few distractors (short spikes, smooth bumps, bursts of
louder noise: none of them is a class) and one class motif (a sine burst, a square-wave burst or a chirp) at a
random place. The motif's length is drawn independently of its class, so length is no shortcut, and
distractors never touch it (they keep a few samples away), so its mask is exactly the samples the motif was
added to.

Motifs, background noise and distractors come from three independent streams of the seed: changing `noise`
or `distractors` leaves labels, masks and motifs as they are, which makes the clean signal (`noise=0,
distractors=0`) the motif alone.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from keras_cam._validation import check_int
from keras_cam.datasets._common import balanced_labels, check_amount, check_classes, streams

__all__ = ["SIGNALS", "make_signals"]

SIGNALS = ("sine", "square", "chirp")

# Motif length as a fraction of the signal: the pointing game's chance level is about its mean (0.125).
_MOTIF_LENGTH = (0.10, 0.15)
_MIN_LENGTH = 64  # below this a motif is too few samples to tell its class
# Frequencies in cycles per sample, so that a network's receptive field sees the same shapes at any length.
# The bands do not overlap, so a few periods tell the classes apart: with the square wave at 0.06-0.08,
# inside the chirp's sweep, a 3-layer Conv1D network confused the two (accuracy 0.96 instead of 0.99). A
# single square pulse was tried first: CAMs found it only 70-78 % of the time, lost to the drift and bumps.
_SINE_FREQ = (0.14, 0.18)
_SQUARE_FREQ = (0.10, 0.12)
_CHIRP_FREQ = (0.03, 0.09)
_GAP = 4  # samples kept free between the motif and any distractor


def _motif(rng: np.random.Generator, kind: str, length: int) -> np.ndarray:
    """One motif of `length` samples, amplitude 0.8-1.2 and random sign; none of its samples is zero."""
    t = np.arange(length, dtype=np.float64)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "sine":
        wave = np.sin(2 * np.pi * rng.uniform(*_SINE_FREQ) * t + phase)
    elif kind == "square":
        wave = np.where(np.sin(2 * np.pi * rng.uniform(*_SQUARE_FREQ) * t + phase) >= 0, 1.0, -1.0)
    else:  # chirp: the frequency rises linearly across the motif, whatever its length
        f0, f1 = _CHIRP_FREQ
        wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * length)) + phase)
    return rng.choice((-1.0, 1.0)) * rng.uniform(0.8, 1.2) * wave


def _background(rng: np.random.Generator, n: int, length: int, noise: float) -> np.ndarray:
    """White noise (std 0.3) plus a slow drift (0.5 to 2 periods of a sine of amplitude 0.2-0.5 per signal,
    and an offset of up to 0.3), all times `noise`."""
    t = np.arange(length) / length
    amp, cycles = rng.uniform(0.2, 0.5, (n, 1)), rng.uniform(0.5, 2.0, (n, 1))
    drift = amp * np.sin(2 * np.pi * (cycles * t + rng.random((n, 1)))) + rng.uniform(-0.3, 0.3, (n, 1))
    return noise * (drift + 0.3 * rng.standard_normal((n, length)))


def _distractor(rng: np.random.Generator) -> np.ndarray:
    """A spike (1-3 samples), a smooth Gaussian bump or a burst of louder white noise, random sign."""
    kind = rng.integers(3)
    if kind == 0:
        return rng.choice((-1.0, 1.0)) * rng.uniform(1.2, 2.0) * np.ones(rng.integers(1, 4))
    if kind == 1:
        sigma = rng.uniform(3.0, 7.0)
        x = np.arange(-int(3 * sigma), int(3 * sigma) + 1)
        return rng.choice((-1.0, 1.0)) * rng.uniform(0.8, 1.2) * np.exp(-0.5 * (x / sigma) ** 2)
    return rng.uniform(0.4, 0.7) * rng.standard_normal(rng.integers(10, 31))


def _free_start(rng: np.random.Generator, width: int, length: int, start: int, stop: int) -> int:
    """A random start for `width` samples that keeps `_GAP` samples away from [start, stop), or -1."""
    left = max(0, start - _GAP - width + 1)  # starts 0 .. left-1 end before the gap
    right = max(0, length - width - (stop + _GAP) + 1)  # starts stop+_GAP .. length-width
    if left + right == 0:
        return -1
    k = int(rng.integers(left + right))
    return k if k < left else stop + _GAP + (k - left)


def make_signals(
    n: int,
    length: int = 256,
    seed: int = 0,
    classes: Sequence[str] = ("sine", "square", "chirp"),
    noise: float = 1.0,
    distractors: int = 3,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generates `n` noisy 1-D signals, each with one class motif at a random place, and its mask.

    The motif covers 10-15 % of the samples whatever its class, so the pointing game's chance level is about
    0.125. Labels are balanced (counts differ by at most one) and shuffled. Motifs (amplitude 0.8-1.2, random
    sign and phase): "sine" a sine burst at 0.14-0.18 cycles per sample, "square" a square-wave burst at
    0.10-0.12, "chirp" a sine whose frequency rises from 0.03 to 0.09 across the motif.

    Args:
        n: number of signals (>= 1).
        length: samples per signal (>= 64).
        seed: non-negative integer; the same arguments give bit-identical arrays.
        classes: motif names, label `i` being `classes[i]`; 2 or more of `SIGNALS`: "sine", "square",
            "chirp".
        noise: strength of the background (white noise of std 0.3 and a slow drift of up to 0.8, times
            `noise`); 0 gives a flat zero background.
        distractors: spikes, bumps and noise bursts per signal (none of them a class motif); they never come
            within 4 samples of the motif, and are left out where the signal is too short for that.

    Returns:
        A tuple `(signals, labels, masks)`: float32 `(n, length, 1)` (one channel, for `Conv1D`), int64
        `(n,)` class indices, and bool `(n, length)` marking the motif's samples.

    Example:

    >>> from keras_cam.datasets import make_signals
    >>> signals, labels, masks = make_signals(6, seed=0)
    >>> signals.shape, labels.tolist().count(2), masks.shape
    ((6, 256, 1), 2, (6, 256))
    >>> clean, _, _ = make_signals(6, seed=0, noise=0, distractors=0)
    >>> bool(((clean[..., 0] != 0) == masks).all())  # without noise, only the motif is left
    True
    """
    n = check_int("n", n, 1)
    length = check_int("length", length, _MIN_LENGTH)
    check_int("seed", seed, 0)
    classes = check_classes(classes, SIGNALS, "motif")
    noise = check_amount("noise", noise, "0 = no background, 1 = default")
    distractors = check_int("distractors", distractors, 0)

    motif_rng, noise_rng, distractor_rng = streams(seed, 3)
    labels = balanced_labels(motif_rng, n, len(classes))
    signals = _background(noise_rng, n, length, noise)
    masks = np.zeros((n, length), bool)
    for i, label in enumerate(labels):
        width = int(round(motif_rng.uniform(*_MOTIF_LENGTH) * length))
        start = int(motif_rng.integers(0, length - width + 1))
        stop = start + width
        for _ in range(distractors):
            shape = _distractor(distractor_rng)
            at = _free_start(distractor_rng, len(shape), length, start, stop)
            if at >= 0:
                signals[i, at : at + len(shape)] += shape
        signals[i, start:stop] += _motif(motif_rng, classes[label], width)
        masks[i, start:stop] = True
    return signals[..., None].astype(np.float32), labels, masks
