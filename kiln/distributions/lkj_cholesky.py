"""``torch.distributions.lkj_cholesky``: ``LKJCholesky`` where code imports it from (``from
torch.distributions.lkj_cholesky import LKJCholesky``)."""

from kiln.frontend.distributions_lkj import LKJCholesky

__all__ = ["LKJCholesky"]
