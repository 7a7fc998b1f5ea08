"""keras-cam: see where and what a Keras 3 convolutional network looks at.

Class activation maps (CAMHead), the Grad-CAM family of explainers, filter visualization and training
callbacks for any Keras 3 model, on the TensorFlow, JAX and PyTorch backends.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any, List

# OpenCV refuses to decode images above OPENCV_IO_MAX_IMAGE_PIXELS, which it reads once, when cv2 is first
# imported (Keras imports cv2 too), and whose own default of 2**30 lets a 1 MB PNG of 32000 x 32000 take
# 3 GB and 20 s. Lower it to keras_cam.visualize.DEFAULT_MAX_PIXELS (Pillow's decompression-bomb threshold)
# before anything imports cv2, for the formats whose headers read_image does not check itself; a value the
# user set is kept. Imported after keras or cv2, this has no effect: read_image's header check still holds.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "178956970")

# The public names, one line each: name -> the module that defines it. They are imported on first use
# (PEP 562), so that `import keras_cam` and `keras-cam --help` do not pay for importing Keras and its backend
# up front, and the command line can import the backend quietly (TensorFlow logs to stderr on import).
_EXPORTS = {
    # explainers
    "BaseCAM": "keras_cam.explainers",
    "GradCAM": "keras_cam.explainers",
    "GradCAMPlusPlus": "keras_cam.explainers",
    "HiResCAM": "keras_cam.explainers",
    "XGradCAM": "keras_cam.explainers",
    "LayerCAM": "keras_cam.explainers",
    "ScoreCAM": "keras_cam.explainers",
    "EigenCAM": "keras_cam.explainers",
    "CAM": "keras_cam.explainers",
    "GradCAMElementWise": "keras_cam.explainers",
    "FinerCAM": "keras_cam.explainers",
    "EigenGradCAM": "keras_cam.explainers",
    "KPCACAM": "keras_cam.explainers",
    "FEM": "keras_cam.explainers",
    "RandomCAM": "keras_cam.explainers",
    "AblationCAM": "keras_cam.explainers",
    "FullGrad": "keras_cam.explainers",
    "ShapleyCAM": "keras_cam.explainers",
    "Saliency": "keras_cam.explainers",
    "SmoothGrad": "keras_cam.explainers",
    "IntegratedGradients": "keras_cam.explainers",
    "GuidedBackprop": "keras_cam.explainers",
    "GuidedGradCAM": "keras_cam.explainers",
    "LRP": "keras_cam.explainers",
    "available_methods": "keras_cam.explainers",
    "class_activation_maps": "keras_cam.explainers",
    "get_explainer": "keras_cam.explainers",
    # layers
    "CAMHead": "keras_cam.layers",
    "attach_cam_head": "keras_cam.layers",
    # filters and feature maps
    "FilterVisualizer": "keras_cam.activation_maximization",
    "feature_maps": "keras_cam.feature_extraction",
    # pictures
    "feature_map_grid": "keras_cam.visualize",
    "image_grid": "keras_cam.visualize",
    "kernel_grid": "keras_cam.visualize",
    "overlay": "keras_cam.visualize",
    "overlay_signal": "keras_cam.visualize",
    "save_image": "keras_cam.visualize",
    "volume_montage": "keras_cam.visualize",
    # scoring every method
    "MethodComparison": "keras_cam.comparison",
    "compare_methods": "keras_cam.comparison",
    # whole datasets
    "explain_dataset": "keras_cam.streaming",
    "open_store": "keras_cam.store",
    # what a model relies on, over a whole dataset
    "audit": "keras_cam.auditing",
    # the cache of compiled functions
    "clear_cache": "keras_cam._batching",
    "set_cache_size": "keras_cam._batching",
}
#: Submodules that are part of the public API as namespaces (`kc.callbacks.CAMSnapshot`, ...).
_NAMESPACES = ("callbacks", "comparison", "datasets", "integrations", "lrp", "metrics", "targets")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # kc.layers, kc.visualize, ...
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))


try:  # the installed distribution's version: pyproject.toml is its one source
    import importlib.metadata

    __version__ = importlib.metadata.version("keras-cam")
except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

__all__ = sorted(_EXPORTS) + list(_NAMESPACES)


# `CAMHead` must be registered with Keras before a saved model that holds one is loaded, also after a plain
# `import keras_cam` (`keras.saving.load_model` does not import our module for us). Registering means
# importing Keras, which `import keras_cam` avoids (see above): so the layers are registered as soon as Keras
# is imported, now if it already is, else right after the import of Keras finishes.
def _register_layers() -> None:
    importlib.import_module(f"{__name__}.layers")


class _AfterKerasImport:
    """A meta path finder that runs `_register_layers` once the `keras` module has been executed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "keras":
            return None
        import sys

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        loader = getattr(spec, "loader", None)
        if spec is None or not hasattr(loader, "exec_module"):
            return spec

        class _Loader:
            def __getattr__(self, attr: str) -> Any:
                return getattr(loader, attr)

            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                try:
                    _register_layers()
                except Exception:  # noqa: BLE001 - registering must never break importing Keras
                    pass

        spec.loader = _Loader()
        return spec


def _install_registration() -> None:
    import sys

    if "keras" in sys.modules:
        _register_layers()
    elif not any(isinstance(f, _AfterKerasImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())


_install_registration()
