"""Vision transformers: tokens laid out on their grid, the automatic layer, nested paths and keras-hub models
built from their config with random weights (no download)."""
import warnings

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import backend as seam
from keras_cam.capture import tokens

keras_hub = pytest.importorskip("keras_hub")

SIZE, PATCH, DIM = 32, 8, 16
GRID = SIZE // PATCH


def vit(class_token: bool = True, seed: int = 0) -> keras.Model:
    """A 2-block keras-hub ViT classifier on 32x32 images: 4x4 patches of 8 pixels (+ a class token)."""
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(image_shape=(SIZE, SIZE, 3), patch_size=PATCH, num_layers=2, num_heads=2,
                                            hidden_dim=DIM, mlp_dim=32, use_class_token=class_token)
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=3, preprocessor=None,
                                               pooling="token" if class_token else "gap")


def images(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3)).astype("float32")


def reference_gradcam(model, layer, x, k, prefix):
    """Grad-CAM by hand: the layer's tokens and their gradients, the prefix dropped, the rest row-major."""
    acts, grads, _, _ = seam.get().activation_grads(model, keras.ops.convert_to_tensor(x), [layer],
                                                    lambda out: (out[:, k], None))
    a, g = (keras.ops.convert_to_numpy(t)[:, prefix:].reshape(len(x), GRID, GRID, -1) for t in (acts[0], grads[0]))
    return np.maximum((a * g.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)


@pytest.fixture(scope="module")
def models():
    return {True: vit(True), False: vit(False, seed=1)}


@pytest.mark.backends
@pytest.mark.parametrize("class_token", [True, False])
def test_token_maps_equal_a_hand_written_reference(models, class_token):
    model, x = models[class_token], images()
    explainer = kc.GradCAM(model)
    assert explainer.layer_ref.path.endswith("vit_encoder/transformer_block_2/ln_1")
    maps = {k: reference_gradcam(model, explainer.layer, x, k, prefix=int(class_token)) for k in range(3)}
    k = max(maps, key=lambda c: maps[c].sum())  # random weights: pick the class with the most positive evidence
    assert maps[k].sum() > 0
    got = explainer.explain(x, targets=k, upsample=False, normalize=False)
    np.testing.assert_allclose(got, maps[k], rtol=1e-4, atol=1e-6)
    up = explainer.explain(x, targets=k)
    assert up.shape == (3, SIZE, SIZE) and up.min() >= 0 and up.max() == pytest.approx(1)


@pytest.mark.backends
def test_reshape_as_a_grid_or_a_callable_equals_the_automatic_layout(models):
    model, x = models[True], images()
    auto = kc.HiResCAM(model).explain(x, targets=1, normalize=False)
    grid = kc.HiResCAM(model, reshape=(GRID, GRID)).explain(x, targets=1, normalize=False)
    by_hand = kc.HiResCAM(model, reshape=lambda t: keras.ops.reshape(t[:, 1:], (-1, GRID, GRID, DIM)))
    np.testing.assert_allclose(grid, auto, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(by_hand.explain(x, targets=1, normalize=False), auto, rtol=1e-5, atol=1e-7)
    # several targets per image: the callable also lays out the (N, K, L, D) gradients
    several = by_hand.explain(x, targets=[[1, 0]] * 3, normalize=False)
    np.testing.assert_allclose(several[:, 0], auto, rtol=1e-5, atol=1e-7)


@pytest.mark.backends
def test_the_block_output_trap_warns_and_names_the_layer_to_use(models):
    model = models[True]
    auto = kc.GradCAM(model).layer_ref.path
    block = auto.rsplit("/", 1)[0]  # the last block's output: the head reads its class token only
    with pytest.warns(UserWarning, match=f"layer='{auto}'"):
        maps = kc.GradCAM(model, layer=block).explain(images(), upsample=False)
    assert not maps.any()
    with warnings.catch_warnings(record=True) as caught:  # the recommended layer is not sent elsewhere
        warnings.simplefilter("always")
        maps = kc.GradCAM(model).explain(images())
    assert not [w for w in caught if "class token" in str(w.message)]
    # With random weights the predicted class may have no positive evidence at all: then it says so.
    assert bool([w for w in caught if "Every map of this call is zero" in str(w.message)]) == (not maps.any())
    no_token = models[False]  # mean pooling reads every token: the block output is fine there
    gap = kc.GradCAM(no_token, layer=kc.GradCAM(no_token).layer_ref.path.rsplit("/", 1)[0])
    assert gap.explain(images(), upsample=False).any()


def test_nested_layers_are_reached_by_path_and_repeated_names_are_refused(models):
    model = models[True]
    backbone = model.get_layer(index=1)
    block = list(backbone.get_layer("vit_encoder")._flatten_layers(include_self=False, recursive=False))[0]
    explainer = kc.GradCAM(model, layer=f"{backbone.name}/vit_encoder/transformer_block_1/ln_1")
    assert block.name == "transformer_block_1" and explainer.layer is block.layer_norm_1
    with pytest.raises(ValueError, match="'ln_1' is ambiguous.*transformer_block_1/ln_1.*Pass the path"):
        kc.GradCAM(model, layer="ln_1")
    with pytest.raises(ValueError, match="transformer_block_9.*did you mean"):
        kc.GradCAM(model, layer=f"{backbone.name}/vit_encoder/transformer_block_9/ln_1")


def test_grids_that_cannot_be_found_say_what_was_tried():
    with pytest.raises(ValueError, match=r"outputs 3 tokens.*tried every h x w.*reshape=\(h, w\)"):
        tokens.token_grid(keras.Sequential([keras.Input((5,))]), "mix", 3, (32, 32))
    with pytest.raises(ValueError, match=r"reshape=\(5, 5\).*needs 25 tokens.*outputs 17"):
        tokens.token_grid(keras.Sequential([keras.Input((5,))]), "ln", 17, (32, 32), reshape=(5, 5))
    # without a patch embedding: the input's aspect ratio, fewest prefix tokens first
    assert tokens.token_grid(keras.Sequential([keras.Input((5,))]), "ln", 17, (32, 32)) == (1, 4, 4)
    assert tokens.token_grid(keras.Sequential([keras.Input((5,))]), "ln", 10, (16, 32)) == (2, 2, 4)
    with pytest.raises(ValueError, match="`reshape` must be None, a grid"):
        kc.GradCAM(vit(), reshape=4)


@pytest.mark.backends
def test_every_method_on_a_vit(models):
    x = images(n=2)
    for name in kc.available_methods():
        if name == "cam":
            continue  # CAM needs a CAMHead
        maps = kc.get_explainer(name, models[False]).explain(x)
        assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all(), name
        assert maps.min() >= 0 and maps.max() <= 1 + 1e-6, name


@pytest.mark.backends
def test_lrp_through_keras_hub_vit_blocks_shares_each_sum_in_proportion(models):
    """The ViT's residual sums and its position embeddings share relevance in proportion (zennit's Norm), not
    as a gradient (which hands each branch all of it): read at the layers on both sides of each sum."""
    model, x = models[True], images(n=2)
    backbone = model.backbone
    path = f"{backbone.name}/vit_patching_and_embedding"
    block_path = f"{backbone.name}/vit_encoder/transformer_block_1"
    lrp = kc.LRP(model, composite="epsilon", layer=[path, f"{path}/patch_embedding", block_path, f"{block_path}/mlp"])
    r_embedding, r_patches, r_block, r_mlp = lrp.relevance(x, targets=[0, 2])
    plan = dict(lrp.plan())  # by path: every block has an `ln_1`
    assert plan[block_path] == "Norm(epsilon=1e-06)" and plan[f"{path}/patch_embedding"] == "Epsilon(epsilon=1e-06)"
    assert plan[f"{block_path}/ln_1"] == plan[f"{backbone.name}/vit_encoder/transformer_block_2/ln_1"] == \
        "LayerNorm(epsilon=1e-06)"
    embedding = backbone.get_layer("vit_patching_and_embedding")
    block = backbone.get_layer("vit_encoder").encoder_layers[0]
    f64 = lambda t: keras.ops.convert_to_numpy(t).astype(np.float64)  # noqa: E731
    patches = f64(embedding.patch_embedding(x)).reshape(2, GRID * GRID, DIM)
    tokens = f64(embedding(x))
    stab = lambda z: z + 1e-6 * np.where(z >= 0, 1.0, -1.0)  # noqa: E731
    want = patches / stab(tokens[:, 1:]) * r_embedding[:, 1:]
    np.testing.assert_allclose(r_patches.reshape(2, GRID * GRID, DIM), want, rtol=1e-3, atol=1e-4 * abs(want).max())
    h = block.layer_norm_1(embedding(x))
    middle = embedding(x) + block.mha(h, h)
    y = f64(block.mlp(block.layer_norm_2(middle)))
    want = y / stab(f64(middle) + y) * r_block
    np.testing.assert_allclose(r_mlp, want, rtol=1e-3, atol=1e-4 * abs(want).max())
    # A gradient would have handed the MLP branch all of the block's relevance.
    assert np.abs(r_mlp - r_block).max() > 0.1 * np.abs(r_block).max()


@pytest.mark.backends
def test_lrp_through_the_classifiers_mean_pooling_shares_in_proportion(models):
    """`pooling="gap"` averages the tokens with `keras.ops.mean` in the classifier's graph: each token's share
    of the relevance is its contribution, `x_tc w_ck / T`, not the gradient's even `mean_c w_ck / T`."""
    model, x = models[False], images(n=2)
    lrp = kc.LRP(model, composite="epsilon", layer=model.backbone.name)
    r_tokens = lrp.relevance(x, targets=1)
    tokens = keras.ops.convert_to_numpy(model.backbone(x)).astype(np.float64)
    w = keras.ops.convert_to_numpy(model.get_layer("predictions").kernel).astype(np.float64)[:, 1]
    want = tokens * w / tokens.shape[1]  # the stabilizers' factors are 1 to 1e-5 here
    np.testing.assert_allclose(r_tokens.reshape(want.shape), want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


@pytest.mark.backends
def test_lrp_through_keras_hub_deit_shares_its_sums_in_proportion():
    """DeiT's residual sums (one in its block, one in the block's DeiTOutput) and its position embeddings
    (after the class and distillation tokens) under Norm: read on both sides of the sums."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.DeiTBackbone(image_shape=(SIZE, SIZE, 3), patch_size=PATCH, num_layers=2,
                                             num_heads=2, hidden_dim=DIM, intermediate_dim=32)
    model, x = _head(backbone), images(n=2)
    path = f"{backbone.name}/deit_patching_and_embedding"
    block_path = f"{backbone.name}/deit_encoder/transformer_block_1"
    lrp = kc.LRP(model, composite="epsilon", layer=[path, f"{path}/patch_embedding", f"{block_path}/output_layer",
                                                    f"{block_path}/output_layer/output"])
    r_embedding, r_patches, r_block, r_dense = lrp.relevance(x, targets=1)
    plan = dict(lrp.plan())
    assert plan[block_path] == plan[f"{block_path}/output_layer"] == plan[path] == "Norm(epsilon=1e-06)"
    embedding = backbone.get_layer("deit_patching_and_embedding")
    block = backbone.get_layer("deit_encoder").encoder_layers[0]
    f64 = lambda t: keras.ops.convert_to_numpy(t).astype(np.float64)  # noqa: E731
    stab = lambda z: z + 1e-6 * np.where(z >= 0, 1.0, -1.0)  # noqa: E731
    patches = f64(embedding.patch_embedding(x)).reshape(2, GRID * GRID, DIM)
    tokens = f64(embedding(x))
    want = patches / stab(tokens[:, 2:]) * r_embedding[:, 2:]
    np.testing.assert_allclose(r_patches.reshape(2, GRID * GRID, DIM), want, rtol=1e-3, atol=1e-4 * abs(want).max())
    h = block.layer_norm_1(embedding(x))
    middle = f64(block.mha(h, h)) + tokens
    dense = f64(block.output_layer.dense(block.mlp(block.layer_norm_2(keras.ops.convert_to_tensor(middle, "float32")))))
    want = dense / stab(dense + middle) * r_block
    np.testing.assert_allclose(r_dense, want, rtol=1e-3, atol=1e-4 * abs(want).max())
    # A gradient would have handed the dense branch all of the block's relevance.
    assert np.abs(r_dense - r_block).max() > 0.1 * np.abs(r_block).max()


@pytest.mark.backends
def test_lrp_through_keras_hub_dinov2_shares_its_sums_in_proportion():
    """DINOv2: the second residual sum of a layer (its MLP branch scaled by LayerScale, which passes relevance)
    and the position embeddings (before the register tokens go in) under Norm."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.DINOV2Backbone(patch_size=PATCH, num_layers=2, hidden_dim=DIM, num_heads=2,
                                               intermediate_dim=32, num_register_tokens=4, image_shape=(SIZE, SIZE, 3),
                                               position_embedding_shape=(SIZE, SIZE, 3))
    model, x = _head(backbone), images(n=2)
    path, block_path = f"{backbone.name}/embeddings", f"{backbone.name}/encoder/layers_0"
    lrp = kc.LRP(model, composite="epsilon", layer=[path, f"{path}/patch_embeddings/projection", block_path,
                                                    f"{block_path}/layer_scale2"])
    r_embedding, r_patches, r_block, r_scaled = lrp.relevance(x, targets=2)
    plan = dict(lrp.plan())
    assert plan[block_path] == plan[path] == "Norm(epsilon=1e-06)" and plan[f"{block_path}/layer_scale1"] == "Pass()"
    embeddings, block = backbone.get_layer("embeddings"), backbone.get_layer("encoder").layers[0]
    f64 = lambda t: keras.ops.convert_to_numpy(t).astype(np.float64)  # noqa: E731
    stab = lambda z: z + 1e-6 * np.where(z >= 0, 1.0, -1.0)  # noqa: E731
    patches = f64(embeddings.patch_embeddings(x))
    positions = f64(embeddings.interpolated_position_embeddings)[:, 1:]
    want = patches / stab(patches + positions) * r_embedding[:, 5:]  # after the class and 4 register tokens
    np.testing.assert_allclose(r_patches.reshape(want.shape), want, rtol=1e-3, atol=1e-4 * abs(want).max())
    tokens = embeddings(x)
    hidden = block.layer_scale1(block.attention(block.norm1(tokens))) + tokens
    scaled = f64(block.layer_scale2(block.mlp(block.norm2(hidden))))
    want = scaled / stab(scaled + f64(hidden)) * r_block
    np.testing.assert_allclose(r_scaled, want, rtol=1e-3, atol=1e-4 * abs(want).max())
    assert np.abs(r_scaled - r_block).max() > 0.1 * np.abs(r_block).max()  # not a gradient's all-to-each


def _head(backbone: keras.Model) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, keras.layers.Dense(3)(backbone(inputs)[:, 0]))


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["deit", "dinov2", "resnet"])
def test_keras_hub_models(kind):
    keras.utils.set_random_seed(0)
    if kind == "deit":  # class and distillation tokens: 2 + 16
        model = _head(keras_hub.models.DeiTBackbone(image_shape=(SIZE, SIZE, 3), patch_size=PATCH, num_layers=2,
                                                    num_heads=2, hidden_dim=DIM, intermediate_dim=32))
    elif kind == "dinov2":  # class and 4 register tokens: 5 + 16
        model = _head(keras_hub.models.DINOV2Backbone(patch_size=PATCH, num_layers=2, hidden_dim=DIM, num_heads=2,
                                                      intermediate_dim=32, num_register_tokens=4,
                                                      image_shape=(SIZE, SIZE, 3),
                                                      position_embedding_shape=(SIZE, SIZE, 3)))
    else:
        backbone = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
            stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
            image_shape=(SIZE, SIZE, 3))
        model = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=3, preprocessor=None)
    x = images(n=2)
    explainer, k = kc.GradCAM(model), None
    if kind == "resnet":
        assert explainer.layer_ref.path.endswith("stack1_block0_out")
    else:
        assert explainer.layer_ref.path.rsplit("/", 1)[-1] in ("ln_1", "norm1")
        prefix = {"deit": 2, "dinov2": 5}[kind]
        ref = {k: reference_gradcam(model, explainer.layer, x, k, prefix) for k in range(3)}
        k = max(ref, key=lambda c: ref[c].sum())
        np.testing.assert_allclose(explainer.explain(x, targets=k, upsample=False, normalize=False), ref[k],
                                   rtol=1e-4, atol=1e-6)
    for name in ("gradcam++", "scorecam", "eigencam"):
        maps = kc.get_explainer(name, model).explain(x, targets=k)  # k: a class with positive evidence
        assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all() and maps.any(), (kind, name)
    relevance = kc.LRP(model).explain(x, normalize=False)
    assert relevance.shape == (2, SIZE, SIZE) and np.isfinite(relevance).all() and relevance.any()


@pytest.mark.backends
def test_swin_automatic_layer_is_the_norm_before_its_last_window_attention():
    keras.utils.set_random_seed(2)
    # 32x32 images, 4x4 patches: 8x8 tokens, merged to 4x4 in the last stage; WindowAttention, not MHA.
    backbone = keras_hub.models.SwinTransformerBackbone(image_shape=(SIZE, SIZE, 3), embed_dim=8, depths=(2, 2),
                                                        num_heads=(2, 2), window_size=4, patch_size=4)
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(backbone(inputs))))
    explainer = kc.GradCAM(model)
    assert explainer.layer_ref.path.endswith("stage_1/blocks_1/norm1")
    x = images()
    ref = {k: reference_gradcam(model, explainer.layer, x, k, prefix=0) for k in range(3)}
    k = max(ref, key=lambda c: ref[c].sum())
    np.testing.assert_allclose(explainer.explain(x, targets=k, upsample=False, normalize=False), ref[k],
                               rtol=1e-4, atol=1e-6)
    # Swin's own blocks (window attention, shifted windows): no LRP rules, every one named with its path.
    with pytest.raises(ValueError, match=r"LRP has no rule for layers '[^']+/[^']+' .*, holds layers.*Give them"):
        kc.LRP(model)(x)


@pytest.mark.backends
def test_a_layer_that_returns_several_tensors_is_refused_by_name():
    class Pair(keras.layers.Layer):  # e.g. a transformer block returning (output, attention scores)
        def call(self, x):
            return x, x * 2.0

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    first, second = Pair(name="pair")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(first + second)))
    for method in (kc.GradCAM, kc.ScoreCAM, kc.EigenCAM):
        with pytest.raises(ValueError, match=r"^Layer 'pair' returns 2 tensors \(a tuple\)"):
            method(model, layer="pair")(images(2))


@pytest.mark.backends
def test_all_zero_maps_always_warn():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv",
                            kernel_initializer="ones", bias_initializer="zeros")(inputs)
    head = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(-1.0))
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(x)))  # all evidence negative
    with pytest.warns(UserWarning, match=r"Every map of this call is zero \(GradCAM at 'conv'\)"):
        maps = kc.GradCAM(model).explain(images(2), targets=0)
    assert not maps.any()
