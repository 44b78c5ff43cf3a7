"""``kiln.optim.swa_utils``: ``torch.optim.swa_utils``' weight averaging (SWA, EMA), ``SWALR`` and ``update_bn``."""

from kiln.frontend.swa_utils import (
    SWALR, AveragedModel, get_ema_avg_fn, get_ema_multi_avg_fn, get_swa_avg_fn, get_swa_multi_avg_fn, update_bn,
)

__all__ = ["AveragedModel", "SWALR", "get_ema_avg_fn", "get_ema_multi_avg_fn", "get_swa_avg_fn", "get_swa_multi_avg_fn", "update_bn"]
