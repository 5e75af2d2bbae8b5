"""The worker side of the RewardPool (pool.py): what every scoring worker holds (SiteScorer: one
Browser and the cascade over it; ray_backend.py makes it a Ray actor), and the loop a local
worker process runs (`_worker_main`): READY once its browser is up, then one site per message
until the pool sends None or the pipe closes.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from vlmagent.config import Config, from_dict

READY = "ready"  # a worker's first message: its browser and cascade are up


class SiteScorer:
    """What every scoring worker holds (a local process here, a Ray actor in ray_backend.py):
    one Browser, started before the first site, and the cascade over it."""

    def __init__(self, cfg_dict: dict[str, Any], where: str = "<worker>"):
        from vlmagent.rewards import NEEDS_BROWSER, build_cascade
        from vlmagent.web.browser import Browser

        cfg = from_dict(Config, cfg_dict, where)
        self.browser = Browser(cfg.browser)
        self.cascade = build_cascade(cfg, self.browser)
        if NEEDS_BROWSER & set(cfg.reward.stages):
            try:  # launch Chromium now, not in the first site's time (it launches lazily)
                self.browser._ensure()
            except Exception:  # BrowserError: the first site tries again and reports it
                pass

    def score(self, path: str, chash: str, artifacts: str,
              link_base: str | None) -> dict[str, Any]:
        from vlmagent.rewards import SiteContext

        site = SiteContext(Path(path), chash, Path(artifacts),
                           None if link_base is None else Path(link_base))
        return self.cascade(site).to_dict()

    def close(self) -> None:
        self.browser.close()


def _worker_main(conn: Any, cfg_dict: dict[str, Any]) -> None:
    # Own process group: the parent kills us with Playwright's driver; Chromium (in a session of
    # its own) exits when its pipe to the driver closes.
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    scorer = SiteScorer(cfg_dict)
    try:
        try:
            conn.send(READY)
        except (BrokenPipeError, OSError):
            return
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg is None:
                return
            try:
                conn.send(scorer.score(*msg))
            except (BrokenPipeError, OSError):
                return
    finally:
        scorer.close()
