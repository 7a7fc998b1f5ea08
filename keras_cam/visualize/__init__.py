"""Pictures with OpenCV: heatmap overlays, signal plots, volume montages, mosaics, feature-map and kernel
grids, and image files.

RGB in, RGB out: images are float arrays in [0, 1] or uint8 arrays, (H, W, 3) RGB or (H, W) / (H, W, 1)
grayscale; every function returns new arrays and leaves its inputs alone. OpenCV's BGR order stays inside
the functions that call OpenCV.
"""
from __future__ import annotations

from keras_cam.visualize.grids import feature_map_grid, image_grid, kernel_grid
from keras_cam.visualize.headers import (DEFAULT_MAX_PIXELS, ImageFileError, ImageHeader, check_image_file,
                                         read_header)
from keras_cam.visualize.images import as_rgb, deprocess_image, read_image, save_image, to_uint8
from keras_cam.visualize.overlays import colormap_code, colormap_names, overlay
from keras_cam.visualize.signals import overlay_signal
from keras_cam.visualize.volumes import volume_montage

__all__ = ["as_rgb", "colormap_code", "deprocess_image", "colormap_names", "feature_map_grid", "image_grid", "kernel_grid", "overlay",
           "overlay_signal", "read_image", "save_image", "to_uint8", "volume_montage",
           "DEFAULT_MAX_PIXELS", "ImageFileError", "ImageHeader", "check_image_file", "read_header"]
