"""Batching (``kiln.vmap``) as a transformation of the IR: the rule table and the walk that applies it."""

from kiln.compiler.batching import rules_conv, rules_gather, rules_linalg, rules_movement, rules_nn  # noqa: F401  (register their rules)
from kiln.compiler.batching.batch import Slot, batch_graph
from kiln.compiler.batching.rules import BATCHING_RULES, Batched, BatchingError, batching_rule

__all__ = ["BATCHING_RULES", "Batched", "BatchingError", "Slot", "batch_graph", "batching_rule"]
