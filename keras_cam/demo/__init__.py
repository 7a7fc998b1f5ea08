"""The embedded demos: small networks trained on synthetic data with ground-truth masks, their maps scored.

Everything is generated, so they run offline and every heatmap can be checked against the truth
(`keras-cam demo`, `keras-cam demo --data signals|volumes`, or `make demo`):

- `shapes`: a CNN with a `CAMHead` on `make_shapes` images (`run_demo`, `build_demo_model`);
- `layouts`: a Conv1D network on `make_signals` and a Conv3D network on `make_volumes`
  (`run_layout_demo`, `build_layout_model`);
- `shortcut`: the shapes CNN trained with a planted corner mark, its held-out maps audited by `kc.audit`
  (`run_shortcut_demo`, `keras-cam demo --data shortcut`).
"""
from keras_cam.demo.layouts import LAYOUT_DATA, build_layout_model, run_layout_demo
from keras_cam.demo.shapes import DEFAULT_EPOCHS, build_demo_model, run_demo, train_demo_model
from keras_cam.demo.shortcut import run_shortcut_demo

__all__ = ["DEFAULT_EPOCHS", "LAYOUT_DATA", "build_demo_model", "build_layout_model", "run_demo",
           "run_layout_demo", "run_shortcut_demo", "train_demo_model"]
