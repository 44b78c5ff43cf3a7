"""Base classes that PyTorch code names only to ask ``isinstance`` (``nn.modules.batchnorm._BatchNorm``): kiln's layers
do not derive from them, so each is an ABC with kiln's layers registered as its virtual subclasses."""

from __future__ import annotations

from abc import ABCMeta
from typing import Any


class IsinstanceOnlyBase(metaclass=ABCMeta):
    """Subclassed once per torch base name; a user class deriving from one is refused with what to derive from."""

    derive_from = "the concrete kiln.nn layer"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("kiln.nn.modules"):
            return
        base = next(b for b in cls.__mro__[1:] if b.__module__.startswith("kiln.nn.modules"))
        raise TypeError(
            f"class {cls.__name__} derives from kiln.nn.modules.{base.__module__.rsplit('.', 1)[-1]}.{base.__name__}, "
            f"which kiln keeps only for isinstance checks (its layers do not derive from it); derive from "
            f"{base.derive_from} instead")
