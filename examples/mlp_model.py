"""A model file for the ``kiln`` command: the demo's 64-128-64-10 MLP and its input spec.

    kiln ir examples/mlp_model.py --train --pipeline cse,dce,fuse-elementwise
    kiln viz examples/mlp_model.py -o mlp.svg
    kiln export examples/mlp_model.py -o mlp.onnx
    kiln train examples/mlp_digits.toml
"""

import kiln
import kiln.nn as nn
import kiln.nn.functional as F


class MLP(nn.Module):
    def __init__(self, in_features: int = 64, hidden1: int = 128, hidden2: int = 64, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, classes)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


model = MLP
input_specs = [kiln.TensorSpec(("N", 64), "float32")]
loss = F.cross_entropy
