"""TensorBoard image summaries (needs TensorFlow installed, whatever the Keras backend)."""
from __future__ import annotations

import numpy as np


class ImageWriter:
    """Writes uint8 RGB images as TensorBoard image summaries under `log_dir`."""

    def __init__(self, log_dir: str) -> None:
        try:
            import tensorboard  # noqa: F401  (tf.summary.image needs it at write time)
            import tensorflow as tf
        except ImportError:
            raise ValueError(
                "tensorboard=True needs TensorFlow and TensorBoard for the summary writer: "
                "pip install tensorflow-cpu tensorboard (they work beside the JAX and PyTorch backends), "
                "or leave tensorboard=False."
            ) from None
        self._tf = tf
        with tf.device("/cpu:0"):
            self._writer = tf.summary.create_file_writer(log_dir)
        self.log_dir = log_dir

    def write(self, tag: str, image: np.ndarray, step: int) -> None:
        with self._tf.device("/cpu:0"), self._writer.as_default():
            self._tf.summary.image(tag, np.asarray(image, np.uint8)[None], step=step)

    def flush(self) -> None:
        self._writer.flush()
