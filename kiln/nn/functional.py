"""``kiln.nn.functional`` (``import kiln.nn.functional as F``)."""

from kiln.frontend.functional import *  # noqa: F401,F403
from kiln.frontend.functional import cross_entropy, linear, log_softmax, mse_loss, relu, sigmoid, softmax, tanh  # noqa: F401
