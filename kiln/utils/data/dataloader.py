"""``torch.utils.data.dataloader``: ``DataLoader``, the collate functions and ``get_worker_info``
(``from torch.utils.data.dataloader import default_collate``)."""

from kiln.runtime.data.collate import default_collate, default_convert
from kiln.runtime.data.torch_loader import DataLoader
from kiln.runtime.data.workers import get_worker_info

__all__ = ["DataLoader", "default_collate", "default_convert", "get_worker_info"]
