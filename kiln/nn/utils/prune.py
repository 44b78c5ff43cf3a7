"""``kiln.nn.utils.prune``: ``torch.nn.utils.prune`` (``frontend/prune.py`` says how a pruned tensor is kept and
recomputed, eagerly and in a trace)."""

from kiln.frontend.prune import (BasePruningMethod, CustomFromMask, Identity, L1Unstructured, LnStructured, PruningContainer,
                                 RandomStructured, RandomUnstructured, custom_from_mask, global_unstructured, identity,
                                 is_pruned, l1_unstructured, ln_structured, random_structured, random_unstructured, remove)

__all__ = ["BasePruningMethod", "CustomFromMask", "Identity", "L1Unstructured", "LnStructured", "PruningContainer",
           "RandomStructured", "RandomUnstructured", "custom_from_mask", "global_unstructured", "identity", "is_pruned",
           "l1_unstructured", "ln_structured", "random_structured", "random_unstructured", "remove"]
