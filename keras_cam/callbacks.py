"""Training callbacks that snapshot heatmaps, filter patterns and feature maps every few epochs.

One small base (`SnapshotCallback`) owns the schedule, the directories, atomic PNG writes, TensorBoard and
the evolution strip; each callback only says how it renders one snapshot. Snapshots are computed with the
model in inference mode through compiled functions built once, so they never change training: no global
random state is touched, and weights, optimizer and BatchNorm statistics are left alone.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Union

import cv2
import keras
import numpy as np

from keras_cam import capture, metrics, visualize
from keras_cam._validation import as_image_batch
from keras_cam.activation_maximization import FilterVisualizer
from keras_cam.explainers import BaseCAM, get_explainer
from keras_cam.feature_extraction import FeatureMapExtractor

_FRAME = re.compile(r"^epoch_(\d{3,})\.png$")


class SnapshotCallback(keras.callbacks.Callback):
    """Base class: calls `render(epoch, logs) -> uint8 image` every `every` epochs and writes it.

    `observe(epoch, logs)` runs at the end of every epoch, scheduled or not, so that what a callback adds to
    the logs is there from the first epoch on (CSVLogger fixes its columns then, EarlyStopping warns about
    a missing metric).

    Files: `output_dir/epoch_NNN.png` (1-based epoch numbers that continue across `initial_epoch`), and at
    the end of training `evolution.png` (the snapshots stacked, oldest on top) and `evolution.gif`.

    Args:
        output_dir: directory for the PNGs (created; must be writable).
        every: take a snapshot every `every` epochs (and always at the last epoch).
        tensorboard: also write the snapshots as TensorBoard image summaries (needs TensorFlow installed)
            to `log_dir`, default `output_dir/tensorboard`.
        log_dir: TensorBoard log directory; setting it implies `tensorboard=True`.
    """

    tag = "snapshot"

    def __init__(
        self,
        output_dir: Union[str, os.PathLike],
        every: int = 1,
        tensorboard: bool = False,
        log_dir: Optional[Union[str, os.PathLike]] = None,
    ) -> None:
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"`every` must be >= 1, got {every}.")
        self.output_dir = os.fspath(output_dir)
        self.every = int(every)
        self.log_dir = os.fspath(log_dir) if log_dir is not None else None
        self.tensorboard = bool(tensorboard) or log_dir is not None
        self._writer = None
        self._last_epoch: Optional[int] = None

    # -- what a callback says ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Builds and checks what the snapshots need (called from `set_model`): raise `ValueError` here."""

    def observe(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Called at the end of every epoch, before `render` on the epochs that take a snapshot; adds the
        callback's metrics to `logs`."""

    def render(self, epoch: int, logs: Dict[str, Any]) -> np.ndarray:
        """One snapshot as a uint8 RGB image."""
        raise NotImplementedError

    # -- Keras hooks -------------------------------------------------------------------------------------

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        _check_writable(self.output_dir)
        if self.tensorboard:
            from keras_cam.backend import summary

            self._writer = summary.ImageWriter(self.log_dir or os.path.join(self.output_dir, "tensorboard"))
        self.prepare()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        logs = logs if logs is not None else {}
        self.observe(epoch, logs)
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and (last is None or epoch + 1 != last):
            return
        image = self.render(epoch, logs)
        visualize.save_image(os.path.join(self.output_dir, f"epoch_{epoch + 1:03d}.png"), image)
        if self._writer is not None:
            self._writer.write(self.tag, image, step=epoch + 1)
        self._last_epoch = epoch

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        if self._last_epoch is None:
            return
        frames = self._frames(upto=self._last_epoch + 1)
        if not frames:
            return
        width = max(f.shape[1] for f in frames)
        padded = [np.pad(f, ((0, 0), (0, width - f.shape[1]), (0, 0))) for f in frames]
        visualize.save_image(os.path.join(self.output_dir, "evolution.png"),
                             visualize.image_grid(padded, cols=1, margin=4))
        height = max(f.shape[0] for f in padded)
        _write_gif(os.path.join(self.output_dir, "evolution.gif"),
                   [np.pad(f, ((0, height - f.shape[0]), (0, 0), (0, 0))) for f in padded])
        if self._writer is not None:
            self._writer.flush()

    def _frames(self, upto: int) -> List[np.ndarray]:
        """Snapshots on disk up to epoch `upto`: a resumed run continues the strip of the earlier one."""
        numbered = []
        for name in os.listdir(self.output_dir):
            match = _FRAME.match(name)
            if match and int(match.group(1)) <= upto:
                numbered.append((int(match.group(1)), name))
        return [visualize.to_uint8(visualize.read_image(os.path.join(self.output_dir, name)))
                for _, name in sorted(numbered)]


class CAMSnapshot(SnapshotCallback):
    """Heatmaps of fixed images every `every` epochs, with the pointing game in `logs` when masks are given.

    Each snapshot is a row of overlays labelled with the explained class and its score. The explainer is
    built once and compiled once; targets and scores come from the same forward pass as the heatmaps.

    Args:
        images: (N, H, W, C) images, preprocessed as the model expects; overlays use them as pictures, so
            they should be in [0, 1] (or pass `display_images`). Signals (N, T, C) are drawn as lines over a
            heat band and volumes (N, D, H, W, C) as slices through the map's peak (any range); channels_first
            models take their own layout.
        method: an explainer name (`"gradcam"`, `"gradcam++"`, `"scorecam"`, ...) or instance.
        layer: the layer to explain (None: the last spatial layer).
        targets: None (predicted class), an int, or one int per image (e.g. the true labels).
        output_dir, every, tensorboard, log_dir: see `SnapshotCallback`.
        masks: optional bool object masks of the maps' shape, (N, H, W) (or (N, T), (N, D, H, W)); adds
            `cam_pointing_game` and `cam_energy_pointing_game` to the logs of every epoch (the heatmaps are
            computed every epoch then, the pictures drawn every `every` epochs), so History, CSVLogger,
            EarlyStopping and ModelCheckpoint placed after this callback see them from the first epoch on.
        display_images: optional images in [0, 1] to draw the overlays on (when `images` are not).
        alpha, colormap: overlay settings.
        tile_size: small images are enlarged to this many pixels so the labels stay readable.
        class_names: optional names of the classes, used in the labels instead of their indices.

    Example:

    ```python
    images, labels, masks = kc.datasets.make_shapes(8, size=48, seed=1)
    snap = kc.callbacks.CAMSnapshot(images, targets=labels, masks=masks, output_dir="cams")
    model.fit(x, y, epochs=5, callbacks=[snap])   # cams/epoch_001.png ... evolution.png/.gif
    ```
    """

    tag = "cam"

    def __init__(
        self,
        images: Any,
        method: Union[str, BaseCAM] = "gradcam",
        layer: Any = None,
        targets: Any = None,
        output_dir: Union[str, os.PathLike] = "cam_snapshots",
        every: int = 1,
        tensorboard: bool = False,
        masks: Optional[Any] = None,
        log_dir: Optional[Union[str, os.PathLike]] = None,
        display_images: Optional[Any] = None,
        alpha: float = 0.4,
        colormap: str = "jet",
        tile_size: int = 128,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(output_dir, every, tensorboard, log_dir)
        self.images = as_image_batch(images)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.tile_size = int(tile_size)
        self.method = method
        self.layer = layer
        self.targets = targets
        self.masks = None if masks is None else np.array(masks, dtype=bool, copy=True)
        # The maps' shape: (N, *spatial), the images without their channel axis (last, or first).
        shapes = {self.images.shape[:-1], self.images.shape[:1] + self.images.shape[2:]}
        if self.masks is not None and self.masks.shape not in shapes:
            raise ValueError(f"`masks` must have the maps' shape {self.images.shape[:-1]} (one per example, the "
                             f"images without their channel axis), got {self.masks.shape}.")
        self.display_images = self.images if display_images is None else as_image_batch(display_images)
        if self.images.ndim == 4 and self.display_images.max() > 1.0 + 1e-6:  # signals and volumes are scaled
            raise ValueError("`images` are not in [0, 1], so they cannot be drawn; pass `display_images` in [0, 1].")
        self.alpha = alpha
        self.colormap = colormap
        self.explainer: Optional[BaseCAM] = None
        self._result = None  # this epoch's explanation, computed once for the logs and the picture
        self._channels_first = False

    def prepare(self) -> None:
        if isinstance(self.method, BaseCAM):
            self.explainer = self.method
        else:
            kwargs = {} if self.layer is None else {"layer": self.layer}
            self.explainer = get_explainer(self.method, self.model, **kwargs)
        self.explainer.check_inputs(self.images)  # shape errors now, not deep in training
        self._channels_first = capture.input_layout(self.model, self.images.ndim).channels_first

    def observe(self, epoch: int, logs: Dict[str, Any]) -> None:
        self._result = None
        if self.masks is not None:
            self._result = result = self.explainer.compute(self.images, self.targets)
            logs["cam_pointing_game"] = metrics.pointing_game(result.heatmaps, self.masks)
            logs["cam_energy_pointing_game"] = metrics.energy_pointing_game(result.heatmaps, self.masks)

    def render(self, epoch: int, logs: Dict[str, Any]) -> np.ndarray:
        result = self._result or self.explainer.compute(self.images, self.targets)
        tiles = [self._tile(i, heatmap) for i, heatmap in enumerate(result.heatmaps)]
        # Short enough for a 128-pixel tile: "ep12 triangle 4.21" (epoch, explained class, its score).
        labels = [f"ep{epoch + 1} {self._class_name(t)} {s:.2f}" for t, s in zip(result.targets, result.scores)]
        return visualize.image_grid(tiles, cols=len(tiles), margin=2, labels=labels)

    def _tile(self, i: int, heatmap: np.ndarray) -> np.ndarray:
        """One example's picture: an overlay (images), a line over a heat band (signals), or a strip of
        slices through the map's peak (volumes), with the mask's outline or strip when masks are given."""
        example = self.display_images[i]
        example = np.moveaxis(example, 0, -1) if self._channels_first else example
        mask = None if self.masks is None else self.masks[i]
        if heatmap.ndim == 1:
            return visualize.overlay_signal(example, heatmap, height=self.tile_size, colormap=self.colormap,
                                            mask=mask)
        if heatmap.ndim == 3:
            montage = visualize.volume_montage(example, heatmap, count=3, cols=3, alpha=self.alpha,
                                               colormap=self.colormap, mask=mask)
            return np.pad(montage, ((18, 0), (0, 0), (0, 0)))  # room for the label above the slices' own
        return _at_least(visualize.overlay(example, heatmap, alpha=self.alpha, colormap=self.colormap),
                         self.tile_size)

    def _class_name(self, target: int) -> str:
        if self.class_names is not None and 0 <= target < len(self.class_names):
            return self.class_names[target]
        return str(target)


class FeatureMapSnapshot(SnapshotCallback):
    """Feature maps of a layer for fixed images every `every` epochs (one mosaic per image, side by side).

    Args:
        images: (N, H, W, C) images as the model expects them.
        layer: the layer whose output is shown (name, "outer/inner" path, or Layer).
        output_dir, every, tensorboard, log_dir: see `SnapshotCallback`.
        max_channels: channels shown per image (the first ones).

    Example:

    ```python
    snap = kc.callbacks.FeatureMapSnapshot(images[:2], layer="conv1", output_dir="maps")
    model.fit(x, y, epochs=3, callbacks=[snap])
    ```
    """

    tag = "feature_maps"

    def __init__(
        self,
        images: Any,
        layer: Any,
        output_dir: Union[str, os.PathLike] = "feature_map_snapshots",
        every: int = 1,
        tensorboard: bool = False,
        log_dir: Optional[Union[str, os.PathLike]] = None,
        max_channels: int = 16,
    ) -> None:
        super().__init__(output_dir, every, tensorboard, log_dir)
        self.images = as_image_batch(images)
        self.layer = layer
        self.max_channels = int(max_channels)
        self._extractor = None

    def prepare(self) -> None:
        self._extractor = FeatureMapExtractor(self.model, self.layer)
        self._extractor.check_inputs(self.images)

    def render(self, epoch: int, logs: Dict[str, Any]) -> np.ndarray:
        maps = self._extractor(self.images)
        grids = [visualize.feature_map_grid(m[..., : self.max_channels]) for m in maps]
        return visualize.image_grid(grids, cols=len(grids), margin=6)


class FilterSnapshot(SnapshotCallback):
    """What the filters of a layer respond to (gradient ascent patterns), every `every` epochs.

    The patterns are `FilterVisualizer.grid` mosaics with the visualizer's defaults (a Fourier
    parameterization with random transforms, so they read as images), or whatever `**options` ask.

    Args:
        layer: the layer whose filters are visualized.
        filters: how many (the first `filters`) or which filter indices.
        output_dir, every, tensorboard, log_dir: see `SnapshotCallback`.
        size: pattern size (None: the model's input size when fixed).
        steps: gradient ascent steps per snapshot.
        seed: the same seed every epoch, so patterns change only because the weights do.
        value_range: `(low, high)` of the inputs the model expects (see `FilterVisualizer`).
        **options: other ascent options, passed to `FilterVisualizer.grid`: `param`, `transforms`,
            `objective`, `total_variation`, `l2`, `jitter`, `step_size`, ... (see `AscentOptions`); checked
            here, so a misspelt one fails before training starts.

    Example:

    ```python
    snap = kc.callbacks.FilterSnapshot("conv2", filters=16, output_dir="filters", steps=20)
    model.fit(x, y, epochs=3, callbacks=[snap])
    # the previous look, plain pixel ascent:
    kc.callbacks.FilterSnapshot("conv2", param="pixel", transforms=())
    ```
    """

    tag = "filters"

    def __init__(
        self,
        layer: Any,
        filters: Union[int, Sequence[int]] = 16,
        output_dir: Union[str, os.PathLike] = "filter_snapshots",
        every: int = 1,
        size: Optional[int] = None,
        steps: int = 20,
        seed: int = 0,
        tensorboard: bool = False,
        log_dir: Optional[Union[str, os.PathLike]] = None,
        value_range: Sequence[float] = (0.0, 1.0),
        **options: Any,
    ) -> None:
        super().__init__(output_dir, every, tensorboard, log_dir)
        self.layer = layer
        self.filters = list(range(int(filters))) if isinstance(filters, (int, np.integer)) else list(filters)
        self.size = size
        self.steps = int(steps)
        self.seed = int(seed)
        self.value_range = value_range
        from keras_cam.activation_maximization import AscentOptions

        AscentOptions.of(dict(options, steps=self.steps, seed=self.seed))  # one clear error, now
        self.options = dict(options)
        self.visualizer = None

    def prepare(self) -> None:
        self.visualizer = FilterVisualizer(self.model, self.layer, value_range=self.value_range)
        self.visualizer.check_filters(self.filters)

    def render(self, epoch: int, logs: Dict[str, Any]) -> np.ndarray:
        return self.visualizer.grid(filters=self.filters, size=self.size, steps=self.steps, seed=self.seed,
                                    **self.options)


def _at_least(image: np.ndarray, size: int) -> np.ndarray:
    """Enlarges an image whose longer side is below `size` (pictures of 32-px inputs are unreadable)."""
    scale = size / max(image.shape[:2])
    if scale <= 1:
        return image
    return cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                      interpolation=cv2.INTER_LINEAR)


def _check_writable(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"output_dir '{directory}' is not writable ({e.strerror}); choose another directory.") from None


def _write_gif(path: str, frames: List[np.ndarray], duration_ms: int = 600) -> None:
    """Animated GIF through OpenCV's animation encoder, written atomically."""
    animation = cv2.Animation()
    animation.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    animation.durations = [duration_ms] * len(frames)
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".gif")
    os.close(fd)
    try:
        if not cv2.imwriteanimation(tmp, animation):
            raise OSError(f"OpenCV could not write the GIF '{path}'")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
