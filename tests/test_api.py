"""The public names the project promises (docs/architecture.md, "Public API") exist at the top level."""
import doctest
import importlib

import pytest

import keras_cam as kc


def test_design_contract_names():
    for name in ["CAMHead", "attach_cam_head", "class_activation_maps", "GradCAM", "GradCAMPlusPlus", "HiResCAM",
                 "XGradCAM", "LayerCAM", "ScoreCAM", "EigenCAM", "CAM", "get_explainer", "overlay", "image_grid",
                 "save_image", "FilterVisualizer", "feature_maps", "feature_map_grid", "kernel_grid"]:
        assert callable(getattr(kc, name)), name
    for name in ["CAMSnapshot", "FilterSnapshot", "FeatureMapSnapshot"]:
        assert callable(getattr(kc.callbacks, name)), name
    for name in ["pointing_game", "energy_pointing_game", "deletion_auc", "insertion_auc", "road", "average_drop",
                 "increase_in_confidence", "sanity_check", "boxes_from_heatmaps", "localization_accuracy"]:
        assert callable(getattr(kc.metrics, name)), name
    assert callable(kc.datasets.make_shapes)


def test_export_table_is_the_public_api():
    assert kc.__all__ == sorted(kc._EXPORTS) + list(kc._NAMESPACES)
    for name in kc.available_methods():  # every registered method is public under its class name
        cls = type(kc.get_explainer(name, _tiny_model()))
        assert getattr(kc, cls.__name__) is cls and cls.__name__ in kc.__all__


def _tiny_model():
    import keras

    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), kc.CAMHead(2)])


@pytest.mark.parametrize("module", [
    "keras_cam.datasets.shapes", "keras_cam.datasets.signals", "keras_cam.datasets.volumes",
    "keras_cam.demo.shapes", "keras_cam.demo.layouts", "keras_cam.demo.boxes",
    "keras_cam.explainers.cam", "keras_cam.layers", "keras_cam.metrics.masks", "keras_cam.metrics.imputation",
    "keras_cam.metrics.sanity",
    "keras_cam.visualize.grids", "keras_cam.visualize.headers", "keras_cam.visualize.images",
    "keras_cam.visualize.overlays", "keras_cam.visualize.signals", "keras_cam.visualize.volumes",
])
def test_docstring_examples_run(module):
    failures, attempted = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failures == 0
