"""compare_methods on a hand-built model whose evidence is known: a bright square is class 1."""
import numpy as np
import pytest

import keras_cam as kc
from keras_cam.comparison import METRICS, RANDOM, REFERENCE_METHODS
from tests.models import bright_square_model, squares


@pytest.mark.backends
def test_every_method_localizes_and_beats_random():
    model = bright_square_model()
    images, masks = squares()
    before = images.copy()
    result = kc.compare_methods(model, images, targets=1, masks=masks, steps=8)
    rows = {row["method"]: row for row in result.rows}
    assert list(rows) == [m for m in kc.available_methods() if m not in REFERENCE_METHODS] + [RANDOM]
    assert result.skipped == {} and result.targets.tolist() == [1] * 12
    random = rows.pop(RANDOM)
    assert random["ms_per_image"] is None and random["pointing_game"] < 0.6
    for name, row in rows.items():
        assert row["pointing_game"] == 1.0, name
        assert row["energy_pointing_game"] > 2 * random["energy_pointing_game"], name
        # Removing the square first kills the class score; inserting it first restores it.
        assert row["deletion_auc"] < random["deletion_auc"] - 0.05, name
        assert row["insertion_auc"] > random["insertion_auc"] + 0.05, name
        assert row["ms_per_image"] > 0 and row["first_call_s"] > 0
    # Oracle: on a CAMHead model Grad-CAM is CAM, so their rows agree.
    np.testing.assert_allclose(result.heatmaps["gradcam"], result.heatmaps["cam"], atol=1e-5)
    assert rows["gradcam"]["deletion_auc"] == pytest.approx(rows["cam"]["deletion_auc"], abs=1e-6)
    np.testing.assert_array_equal(images, before)  # nothing the user passed is modified


def test_markdown_table_and_predicted_targets():
    model = bright_square_model()
    images, _ = squares(4)
    result = kc.compare_methods(model, images, methods=["gradcam", "eigencam"], steps=4,
                                        reference=False)
    assert result.targets.tolist() == [1, 1, 1, 1]  # None: the predicted class, bright squares are class 1
    lines = result.to_markdown().splitlines()
    assert lines[0].startswith("| method | pointing game") and len(lines) == 4
    assert lines[2].startswith("| gradcam | – | – |")  # no masks: no pointing game


def test_methods_that_do_not_apply_are_skipped_unless_named():
    model = bright_square_model(head=False)
    images, masks = squares(4)
    result = kc.compare_methods(model, images, targets=1, masks=masks,
                                        methods=None, steps=2, reference=False)
    assert "cam" in result.skipped and "CAMHead" in result.skipped["cam"]
    assert "cam" not in result.heatmaps and "gradcam" in result.heatmaps
    with pytest.raises(ValueError, match="CAMHead"):
        kc.compare_methods(model, images, methods=["cam"])


def test_bad_input_gets_one_clear_error():
    model = bright_square_model()
    images, masks = squares(4)
    with pytest.raises(ValueError, match="Unknown method 'gradkam'"):
        kc.compare_methods(model, images, methods=["gradkam"])
    with pytest.raises(ValueError, match="`masks` must have shape"):
        kc.compare_methods(model, images, masks=masks[:2])
    with pytest.raises(ValueError, match="`methods` is empty"):
        kc.compare_methods(model, images, methods=[])
    with pytest.raises(ValueError, match="a callable cannot be compared"):
        kc.compare_methods(model, images, targets=lambda out: out[:, 0])


@pytest.mark.backends
def test_every_metric_agrees_with_its_own_function():
    model = bright_square_model()
    images, masks = squares(4)
    result = kc.compare_methods(model, images, targets=1, masks=masks, methods=["gradcam", "eigencam"],
                                steps=4, metrics=METRICS, sanity_images=3)
    rows = {row["method"]: row for row in result.rows}
    for name in ("gradcam", "eigencam"):
        row, maps = rows[name], result.heatmaps[name]
        road = kc.metrics.road(model, images, maps, 1)
        assert row["road_morf"] == pytest.approx(road.morf_score, abs=1e-6)
        assert row["road_lerf"] == pytest.approx(road.lerf_score, abs=1e-6)
        assert row["road_morf"] < 0.2 < 0.8 < row["road_lerf"]  # the square first: MoRF falls, LeRF holds
        assert row["average_drop"] == pytest.approx(kc.metrics.average_drop(model, images, maps, 1), abs=1e-4)
        assert row["increase_in_confidence"] == kc.metrics.increase_in_confidence(model, images, maps, 1)
        # The sanity column is the last step of the cascade, on the first `sanity_images` images.
        check = kc.metrics.sanity_check(name, model, images[:3], targets=1)
        assert row["sanity_correlation"] == pytest.approx(check.correlations[-1], abs=1e-6)
    assert rows[RANDOM]["sanity_correlation"] == 1.0  # random maps ignore the model entirely
    header = result.to_markdown().splitlines()[0]
    titles = ("ROAD MoRF ↓", "ROAD LeRF ↑", "average drop % ↓", "increase in confidence % ↑", "sanity ρ ↓")
    for title in titles:
        assert title in header


def test_metrics_can_be_picked_and_unknown_ones_are_refused():
    model = bright_square_model()
    images, masks = squares(2)
    result = kc.compare_methods(model, images, targets=1, masks=masks, methods=["gradcam"], reference=False,
                                metrics=["deletion_auc"])
    row = result.rows[0]
    assert row["deletion_auc"] is not None and row["pointing_game"] is None and row["average_drop"] is None
    assert result.to_markdown().splitlines()[0] == "| method | deletion AUC ↓ | ms / image | first call s |"
    with pytest.raises(ValueError, match="Unknown metric 'deletion'.*deletion_auc"):
        kc.compare_methods(model, images, metrics=["deletion"])
    with pytest.raises(ValueError, match="`metrics` is empty"):
        kc.compare_methods(model, images, metrics=[])
    with pytest.raises(ValueError, match="`sanity_images` must be an integer >= 1"):
        kc.compare_methods(model, images, sanity_images=0)
