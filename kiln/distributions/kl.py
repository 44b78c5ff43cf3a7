"""``torch.distributions.kl``: ``kl_divergence`` and ``register_kl`` where code reaches them through the submodule
(``torchd.kl.kl_divergence``)."""

from kiln.frontend.distributions_kl import kl_divergence, register_kl

__all__ = ["kl_divergence", "register_kl"]
