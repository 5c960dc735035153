"""Fit-free (closed-form) methods: Lightning Callbacks run on a thin carrier module through the
same Trainer as the learnable methods (see base.py)."""
from lightning_modules.fit_free.base import FitFreeCarrier, FitFreeMethod

__all__ = ["FitFreeCarrier", "FitFreeMethod"]
