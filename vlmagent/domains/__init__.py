"""Task domains. Registry: a plain dict, name -> module exposing make_samples, check,
expert_turns, save_samples and load_samples."""
from __future__ import annotations

from types import ModuleType

from vlmagent.domains import zoomgrid, zoomqa

DOMAINS: dict[str, ModuleType] = {"zoomqa": zoomqa, "zoomgrid": zoomgrid}


def get_domain(name: str) -> ModuleType:
    """The domain module by name; an unknown name lists the valid ones."""
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r} (valid: {', '.join(DOMAINS)})")
    return DOMAINS[name]


__all__ = ["DOMAINS", "get_domain"]
