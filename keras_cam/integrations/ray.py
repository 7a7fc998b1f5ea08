"""Ray Data: heatmaps for a dataset spread over many workers, with `ray.data.Dataset.map_batches`.

`Explainer` is a callable class, so Ray builds it once per worker (an actor): the model is loaded and the
explainer built (and compiled, on its first batch) once, then every batch only runs it. Images are resized
to the model's input size as `kc.explain_dataset` resizes image files, so a map made here equals the one the
same file gives there. Ray is imported by neither this module nor keras-cam; `pip install "keras-cam[ray]"`.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = ["Explainer"]

#: The columns `Explainer` adds to each batch.
COLUMNS = ("heatmap", "target", "score")


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ImportError('keras_cam.integrations.ray needs Ray Data: pip install "keras-cam[ray]" '
                          '(or "ray[data]>=2.41").')


def _picture(image: Any, hw: Tuple[int, int], column: str) -> np.ndarray:
    """One image (uint8 HWC as `ray.data.read_images` gives it, grayscale or RGBA too) -> float32 RGB in
    [0, 1] at `hw`, resized as `kc.visualize.read_image` resizes a decoded file (area when shrinking).

    In a batch that mixes grayscale and color files, `read_images` gives the grayscale ones as (1, H, W):
    Ray pads every image of a batch to the same number of axes, in front. A leading axis of 1 before a last
    axis that is no channel count (not 1, 3 or 4) is read so; (1, W, 3) stays a one-row color image."""
    import cv2

    from keras_cam.visualize.images import as_rgb

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 1 and img.shape[-1] not in (1, 3, 4):
        img = img[0]
    img = as_rgb(img, name=f"{column} row")
    h, w = hw
    shrink = h * w < img.shape[0] * img.shape[1]
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return img.astype(np.float32) / 255.0


class Explainer:
    """Adds heatmaps to `ray.data` batches: a callable class for `Dataset.map_batches`.

    Each worker loads the model once (`keras.saving.load_model(path, compile=False)`), builds the explainer
    once (`kc.get_explainer`) and then explains each batch of its images column, resized to the model's input
    size, adding the columns `heatmap` (N, H, W) at the input's size, `target` (the class explained, int64)
    and `score` (its score, float32). The batch's own columns are kept. Set `KERAS_BACKEND` for the workers
    through `ray.init(runtime_env={"env_vars": {"KERAS_BACKEND": ...}})`.

    Args:
        model: the path of a saved `.keras` model (loaded once per worker), or a `keras.Model` (pickled to
            each worker).
        method: an explainer name for `kc.get_explainer` ("gradcam", "gradcam++", "scorecam", ...).
        layer: the layer to explain: None (the last spatial layer), a name or an "outer/inner" path.
        column: the column holding the images, uint8 (H, W, C) arrays (of any sizes; grayscale as (H, W) or,
            in a batch mixed with color images, (1, H, W)), as `ray.data.read_images` names it ("image").
        targets: None (each image's predicted class), an int (that class for every image), or the name of a
            column of class indices (e.g. "label").
        scale: how pixels in [0, 1] become the model's input: "1/255" (keep [0, 1], default), "none"
            ([0, 255]), or the keras.applications modes "caffe", "tf", "torch" (as the CLI's `--scale`).
        preprocess: instead of `scale`, a function from the (N, H, W, C) float32 batch in [0, 1] to the
            model's input.
        dtype: of the heatmaps: "float32" (default) or "uint8" (x255, rounded).
        batch_size: images per compiled call (default: the explainer's, 32).
        unsafe: load the model with `safe_mode=False` (Lambda layers' Python code: only for files you trust).
        **options: explainer options, e.g. `use_logits=False`.

    Raises:
        ValueError: the model file is missing or not a model, the method is unknown, an option is invalid;
            when called, the images' or targets' column is missing or invalid.
        ImportError: Ray is not installed.

    Example:

    ```python
    import ray
    from keras_cam.integrations.ray import Explainer
    ray.init(num_cpus=3, runtime_env={"env_vars": {"KERAS_BACKEND": "tensorflow"}})   # 2 workers, 1 reader
    ds = ray.data.read_images("photos/", include_paths=True)
    maps = ds.map_batches(Explainer, fn_constructor_kwargs={"model": "model.keras", "method": "gradcam"},
                          batch_size=32, compute=ray.data.ActorPoolStrategy(size=2))
    maps.drop_columns(["image"]).write_parquet("heatmaps/")   # path, heatmap, target, score
    ```
    """

    def __init__(self, model: Union[str, os.PathLike, Any], method: str = "gradcam",
                 layer: Optional[str] = None, column: str = "image", targets: Union[None, int, str] = None,
                 scale: str = "1/255", preprocess: Optional[Callable[[np.ndarray], Any]] = None,
                 dtype: str = "float32", batch_size: Optional[int] = None, unsafe: bool = False,
                 **options: Any) -> None:
        _require_ray()
        import keras

        from keras_cam._batching import check_batch_size
        from keras_cam.loading import SCALES, load_model
        from keras_cam.loading import scale as scale_pixels
        from keras_cam.explainers import get_explainer
        from keras_cam._inputs import image_input

        if not isinstance(column, str) or not column:
            raise ValueError(f"`column` must be the name of the images' column (e.g. 'image'), got "
                             f"{column!r}.")
        if targets is not None and (isinstance(targets, bool) or not isinstance(targets, (int, str))):
            raise ValueError("`targets` must be None (the predicted class), an int class index, or the name "
                             f"of a column of class indices (e.g. 'label'); got {type(targets).__name__}.")
        if scale not in SCALES:
            raise ValueError(f"`scale` must be one of {', '.join(SCALES)}; got {scale!r}.")
        if preprocess is not None and (not callable(preprocess) or scale != "1/255"):
            raise ValueError("`preprocess` must be a function of the batch, and replaces `scale`: pass one "
                             "of them.")
        if dtype not in ("float32", "uint8"):
            raise ValueError(f"`dtype` must be 'float32' (default) or 'uint8'; got {dtype!r}.")
        self.batch_size = None if batch_size is None else check_batch_size(batch_size)
        if isinstance(model, (str, os.PathLike)):
            model = load_model(os.fspath(model), unsafe, option="unsafe=True", compile=False)
        elif not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be the path of a saved .keras model, got "
                             f"{type(model).__name__}.")
        where = {} if layer is None else {"layer": layer}
        self.explainer = get_explainer(method, model, **where, **options)
        self.hw, self._channels, self._channels_first = image_input(model)
        self.column, self.targets, self.dtype = column, targets, dtype
        self._preprocess = preprocess if preprocess is not None else (
            None if scale == "1/255" else functools.partial(scale_pixels, mode=scale))

    def _target_values(self, batch: Mapping[str, Any], n: int) -> Any:
        if not isinstance(self.targets, str):
            return self.targets
        if self.targets not in batch:
            raise ValueError(f"The batch has no targets column {self.targets!r} (its columns: "
                             f"{', '.join(map(repr, batch))}); pass targets= the column of class indices.")
        values = np.asarray(batch[self.targets])
        if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"The targets column {self.targets!r} must hold one int class index per image; "
                             f"it holds {values.dtype} of shape {values.shape} for {n} images.")
        return values.astype(np.int64)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The batch (a dict of numpy columns) with the columns `heatmap`, `target` and `score` added."""
        from keras_cam._inputs import pictures_to_input

        if not isinstance(batch, Mapping):
            raise ValueError(f"Explainer takes batches as dicts of numpy arrays, got {type(batch).__name__}; "
                             "call map_batches with batch_format='numpy' (the default).")
        if self.column not in batch:
            raise ValueError(f"The batch has no images column {self.column!r} (its columns: "
                             f"{', '.join(map(repr, batch))}); pass column= the images' column.")
        images = batch[self.column]
        n = len(images)
        out = dict(batch)  # the caller's batch is left as it is
        if n == 0:
            out.update(heatmap=np.zeros((0,) + self.hw, self.dtype), target=np.zeros((0,), np.int64),
                       score=np.zeros((0,), np.float32))
            return out
        pictures = np.stack([_picture(image, self.hw, self.column) for image in images])
        x = pictures_to_input(pictures, self._channels, self._channels_first, self._preprocess)
        result = self.explainer.compute(x, targets=self._target_values(batch, n), batch_size=self.batch_size)
        maps = result.heatmaps
        if self.dtype == "uint8":
            maps = np.round(np.clip(maps, 0.0, 1.0) * 255.0).astype(np.uint8)
        out.update(heatmap=maps, target=result.targets.astype(np.int64), score=result.scores)
        return out
