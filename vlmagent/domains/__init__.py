"""Task domains. Registry: a plain dict, name -> a `Domain` (domains/base.py), usually the
domain's module; shared helpers live in domains/common.py."""
from __future__ import annotations

from vlmagent.domains import driving, webgen, zoomgrid, zoomqa, zoomres
from vlmagent.domains.base import Domain, PerceptionDomain

DOMAINS: dict[str, Domain] = {"zoomqa": zoomqa, "zoomgrid": zoomgrid, "webgen": webgen,
                              "driving": driving, "zoomres": zoomres}


def get_domain(name: str) -> Domain:
    """The domain by name; an unknown name lists the valid ones."""
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r} (valid: {', '.join(DOMAINS)})")
    return DOMAINS[name]


__all__ = ["DOMAINS", "Domain", "PerceptionDomain", "get_domain"]
