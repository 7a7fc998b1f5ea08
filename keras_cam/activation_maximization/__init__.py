"""What a filter responds to: the input pattern that maximizes it, found by gradient ascent on the input.

- `visualizer`: `FilterVisualizer` and its `AscentOptions` (every filter in one batch, one compiled step).
- `parameterization`: what is optimized, pixels or a 1/frequency-scaled spectrum (`param=`).
- `transforms`: the random jitter, zoom and rotation each step applies (`transforms=`).
- `objectives`: what is maximized, `Channel`, `Neuron`, `Direction`, their weighted sums, `Diversity`
  (`objective=`).
"""
from keras_cam.activation_maximization.objectives import Channel, Direction, Diversity, Neuron, Objective, Sum
from keras_cam.activation_maximization.transforms import Jitter, Rotate, Scale, Transform
from keras_cam.activation_maximization.visualizer import AscentOptions, FilterVisualizer

__all__ = ["AscentOptions", "Channel", "Direction", "Diversity", "FilterVisualizer", "Jitter", "Neuron",
           "Objective", "Rotate", "Scale", "Sum", "Transform"]
