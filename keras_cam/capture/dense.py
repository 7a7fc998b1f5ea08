"""The automatic layer of keras-hub detectors and segmenters: the last stage of their image encoder that the
task reads (docs/architecture.md, "Detectors and segmenters").

Why this stage: every output of a dense-prediction model depends on it (each feature-pyramid level through
the top-down path, each decoder through its deepest input), so every box and every mask gets a gradient
there, and it is the most semantic feature map, as for classifiers. The layers after it are no single map:
RetinaNet's heads run once per pyramid level (a layer called several times cannot be explained), a single
pyramid level sees only the boxes of its own anchors (the others' maps are zero), and decoders mix in
shallow stages through skip connections.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import keras
import numpy as np

from keras_cam import layout
from keras_cam.capture.graph import LayerRef, iter_layers, static_output_shape


def _level(key: str) -> int:
    return int(key[1:]) if key[:1] == "P" and key[1:].isdigit() else -1


def dense_layer(model: Any, refs: Optional[List[LayerRef]] = None,
                spatial: Optional[Callable[[], List[LayerRef]]] = None) -> Optional[LayerRef]:
    """The last encoder stage read by a keras-hub task model whose `backbone` holds an image encoder
    (`image_encoder`: RetinaNet, DeepLabV3, SegFormer, BASNet; `backbone`: D-FINE's HGNetV2); None for
    other models (their automatic layer is the usual one).

    Encoders that expose `pyramid_outputs` ({"P2": ..., "P5": ...}) give their deepest level, capped by what
    the task reads (RetinaNet's `max_level`, DeepLabV3's `spatial_pyramid_pooling_key`); HGNetV2 gives its
    last `out_features` stage. Other encoders (BASNet rebuilds its ResNet into blocks of its own) give the
    last of the widest layers (`spatial()`, the model's spatial layers) with the coarsest grid: the bottleneck
    of an encoder-decoder (not a one-channel side output there).
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(model, keras.Model) or not isinstance(backbone, keras.Model) or backbone is model:
        return None
    encoder = getattr(backbone, "image_encoder", None) or getattr(backbone, "backbone", None)
    if not isinstance(encoder, keras.Model) or encoder is backbone:
        return None
    refs = list(iter_layers(model)) if refs is None else refs
    levels: Dict[str, Any] = getattr(encoder, "pyramid_outputs", None) or {}
    cap = getattr(backbone, "max_level", None)
    pooled = _level(str(getattr(backbone, "spatial_pyramid_pooling_key", "") or ""))
    if pooled > 0:
        cap = pooled if cap is None else min(cap, pooled)
    by_id = {id(r.layer): r for r in refs if not r.in_layer}
    for key in sorted((k for k in levels if _level(k) > 0), key=_level, reverse=True):
        if cap is not None and _level(key) > cap:
            continue
        history = getattr(levels[key], "_keras_history", None)
        op = getattr(history, "operation", None)
        found = by_id.get(id(op))
        if found is None and op is not None:  # an encoder rebuilt inside the backbone (BASNet): same names
            named = [r for r in refs if not r.in_layer and r.layer.name == op.name]
            found = named[0] if len(named) == 1 else None
        if found is not None:
            return found
    stages = list(getattr(encoder, "stage_names", None) or [])
    wanted = list(getattr(encoder, "out_features", None) or [])
    if wanted and wanted[-1] in stages and stages.index(wanted[-1]) >= 1:  # HGNetV2: stage_names[0] is the stem
        name = f"encoder_stage_{stages.index(wanted[-1]) - 1}"
        for r in refs:
            if r.layer.name == name and r.path.split("/")[-2:-1] == ["encoder"]:
                return r
    grids = []
    for r in (spatial() if spatial is not None else []):
        shape = static_output_shape(r.layer)
        try:
            place = layout.layer_layout(r, len(shape))  # the ref's traced layout (a BatchNormalization has none)
        except layout.LayoutError:
            continue
        grid, channels = place.spatial_shape(shape), shape[place.channel_axis]
        if None not in grid and channels is not None:
            grids.append((r, int(np.prod(grid)), -int(channels)))
    if not grids:
        return None
    coarsest = min((size, channels) for _, size, channels in grids)  # the smallest grid, the widest there
    return [r for r, size, channels in grids if (size, channels) == coarsest][-1]
