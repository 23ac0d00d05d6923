"""One module per Google API; each has `register(fake)`."""

from __future__ import annotations

import importlib
import pkgutil


def register_all(fake) -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}").register(fake)
