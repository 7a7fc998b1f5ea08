"""keras-cam: see where and what a Keras 3 convolutional network looks at.

Class activation maps (CAMHead), the Grad-CAM family of explainers, filter visualization and training
callbacks for any Keras 3 model, on the TensorFlow, JAX and PyTorch backends.
"""
from keras_cam import callbacks, datasets, metrics
from keras_cam.explainers import (
    CAM,
    BaseCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
    available_methods,
    get_explainer,
)
from keras_cam.filters import FilterVisualizer, feature_map_grid, feature_maps, kernel_grid
from keras_cam.layers import CAMHead, attach_cam_head, class_activation_maps
from keras_cam.visualize import image_grid, overlay, save_image

__version__ = "0.1.0"

__all__ = [
    "CAM",
    "BaseCAM",
    "CAMHead",
    "EigenCAM",
    "FilterVisualizer",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "attach_cam_head",
    "callbacks",
    "available_methods",
    "class_activation_maps",
    "datasets",
    "feature_map_grid",
    "feature_maps",
    "get_explainer",
    "image_grid",
    "kernel_grid",
    "metrics",
    "overlay",
    "save_image",
]
