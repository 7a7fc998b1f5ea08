"""The public names promised by DESIGN.md exist at the top level."""
import keras_cam as kc


def test_design_contract_names():
    for name in ["CAMHead", "attach_cam_head", "class_activation_maps", "GradCAM", "GradCAMPlusPlus", "HiResCAM",
                 "XGradCAM", "LayerCAM", "ScoreCAM", "EigenCAM", "CAM", "get_explainer", "overlay", "image_grid",
                 "save_image", "FilterVisualizer", "feature_maps", "feature_map_grid", "kernel_grid"]:
        assert callable(getattr(kc, name)), name
    for name in ["CAMSnapshot", "FilterSnapshot", "FeatureMapSnapshot"]:
        assert callable(getattr(kc.callbacks, name)), name
    for name in ["pointing_game", "energy_pointing_game", "deletion_auc", "insertion_auc"]:
        assert callable(getattr(kc.metrics, name)), name
    assert callable(kc.datasets.make_shapes)
