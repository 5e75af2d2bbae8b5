"""Reward stages and the cascade that gates them. Registry: a plain dict, name -> factory.

A factory takes (Config, browser) and returns a stage; stages that need no browser ignore it.
"""
from __future__ import annotations

from typing import Any

from vlmagent.config import Config, to_dict
from vlmagent.rewards.aesthetics import AestheticsStage
from vlmagent.rewards.build import BuildStage
from vlmagent.rewards.cascade import Cascade, SiteContext, compose, fingerprint, site_hash
from vlmagent.rewards.execution import ExecutionStage
from vlmagent.rewards.structure import StructureStage
from vlmagent.web.js import load as load_js

REWARD_STAGES: dict[str, Any] = {
    "structure": lambda cfg, browser: StructureStage(cfg.reward.structure),
    # With aesthetics later in the cascade, execution runs its DOM script during the visit, so
    # pages are loaded once per site rather than twice.
    "execution": lambda cfg, browser: ExecutionStage(
        browser, cfg.reward.execution,
        measure=load_js("measure") if "aesthetics" in cfg.reward.stages else None),
    "build": lambda cfg, browser: BuildStage(cfg.webgen),  # scaffold projects: vite build
    "aesthetics": lambda cfg, browser: AestheticsStage(browser, cfg.reward.aesthetics,
                                                       cfg.browser),
}

NEEDS_BROWSER = {"execution", "aesthetics"}
CODE_VERSION = "2"  # bump when a stage's scoring changes, so caches from older code are not reused


def build_cascade(cfg: Config, browser: Any = None) -> Cascade:
    """The website cascade named by cfg.reward.stages, in order."""
    unknown = [s for s in cfg.reward.stages if s not in REWARD_STAGES]
    if unknown:
        raise ValueError(f"unknown reward stage {unknown[0]!r} (valid: {', '.join(REWARD_STAGES)})")
    if browser is None and NEEDS_BROWSER & set(cfg.reward.stages):
        need = ", ".join(s for s in cfg.reward.stages if s in NEEDS_BROWSER)
        raise ValueError(f"the {need} stage(s) need a browser (vlmagent.web.browser.Browser)")
    stages = [REWARD_STAGES[name](cfg, browser) for name in cfg.reward.stages]
    fp = fingerprint(CODE_VERSION, to_dict(cfg.reward), to_dict(cfg.browser), to_dict(cfg.webgen))
    return Cascade(stages, cfg.reward.weights, cfg.reward.timeouts_s, fingerprint=fp,
                   cache_dir=cfg.reward.cache_dir or None)


__all__ = ["REWARD_STAGES", "Cascade", "SiteContext", "build_cascade", "compose", "fingerprint",
           "site_hash"]
