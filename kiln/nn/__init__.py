"""PyTorch-style names: kiln.nn.Module, kiln.nn.Linear, kiln.nn.functional."""
