"""Layer-wise relevance propagation: rules, composites and the canonizer behind `kc.LRP`.

`kc.lrp` holds the rules (`Epsilon`, `Zero`, `Gamma`, `ZPlus`, `AlphaBeta`, `Flat`, `WSquare`, `ZBox`,
`Pass`, `Norm`; for transformers `LayerNorm`, `AttnLRP`, `UniformProduct`), the composites
(`composite(name)`, `Composite`, `available_composites()`), and `propagation`, the modified backward pass
(docs/architecture.md, "Relevance propagation"). The explainer is `kc.LRP` (`keras_cam/explainers/lrp.py`).
"""
from keras_cam.lrp.composites import COMPOSITES, Composite, available_composites, composite
from keras_cam.lrp.rules import (AlphaBeta, AttnLRP, Epsilon, Flat, Gamma, LayerNorm, Norm, Pass, Rule, UniformProduct,
                                 WSquare, ZBox, Zero, ZPlus)

__all__ = ["AlphaBeta", "AttnLRP", "COMPOSITES", "Composite", "Epsilon", "Flat", "Gamma", "LayerNorm", "Norm", "Pass",
           "Rule", "UniformProduct", "WSquare", "ZBox", "ZPlus", "Zero", "available_composites", "composite"]
