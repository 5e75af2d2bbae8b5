"""What the browser tests share: a tight BrowserConfig, the time bounds derived from it, a
normal site and its check, and module-scoped fixtures (a browser, a folder of sites, the hostile
sites). Imported by test_browser.py and test_browser_faults.py (two files, so that pytest-xdist
can run them on two workers)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from vlmagent.config import BrowserConfig
from vlmagent.types import SiteVisit
from vlmagent.web.browser import Browser
from vlmagent.web.sitegen import write_hostile_sites, write_site

CFG = BrowserConfig(nav_timeout_s=3.0, action_timeout_s=1.0, page_budget_s=10.0,
                    site_budget_s=20.0, settle_ms=50, js_heap_mb=128, max_pages=4,
                    max_screenshot_height=2000)
# Every wall-clock bound below is what the code may wait on by CFG's timeouts, plus SLACK_S for
# the work that no timeout bounds (starting a renderer, creating and closing a context, loading
# a small page): about a second on an idle machine, a few on a loaded 2-core one. CFG's budgets
# are far enough apart that a broken guard costs more than its bound.
SLACK_S = 5.0
# A guarded call that hangs (the longest guard is a close's, action_timeout_s + 2 s): the
# watchdog kills the renderers when it expires, and the browser after as long again plus 2 s.
HUNG_CALL_S = 2 * (CFG.action_timeout_s + 2.0) + 2.0
# No site may take longer than its budget plus one hung call.
BOUND_S = CFG.site_budget_s + HUNG_CALL_S + SLACK_S
# A page stuck in a script costs its navigation timeout and one responsiveness probe (an action
# timeout), not its page budget.
STUCK_BOUND_S = CFG.nav_timeout_s + CFG.action_timeout_s + SLACK_S
assert STUCK_BOUND_S < CFG.page_budget_s, "CFG cannot tell a stuck page from a spent budget"
# Closing a context whose page is stuck: at most the close's guard.
CLOSE_S = CFG.action_timeout_s + 2.0

NORMAL = {
    "index.html": '<!doctype html><html><head><meta name="viewport" content="width=device-width">'
                  '<title>Normal</title></head><body><h1>Normal site</h1>'
                  '<a href="about.html">About</a><button id="b" onclick="this.textContent=\'on\'">'
                  'off</button></body></html>',
    "about.html": "<!doctype html><title>About</title><p>About us</p><a href='index.html'>Home</a>",
}


def check_normal(visit: SiteVisit) -> None:
    assert visit.error is None
    assert [p.path for p in visit.pages] == ["/index.html", "/about.html"]
    index = visit.pages[0]
    assert index.status == 200 and index.title == "Normal" and not index.timed_out
    assert not index.crashed and index.blank is False and index.viewport_meta is True
    assert [(i.target, i.changed) for i in index.interactions] == [("button#b 'off'", True)]
    assert visit.blocked_requests == [] and visit.broken_links == []


def dump(visit: SiteVisit) -> str:
    return json.dumps(dataclasses.asdict(visit))


def png_size(path: str | None) -> tuple[int, int]:
    assert path is not None
    with Image.open(path) as im:
        return im.size


@pytest.fixture(scope="module")
def browser():
    with Browser(CFG) as b:
        yield b


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sites")


@pytest.fixture(scope="module")
def normal(sites: Path) -> Path:
    return write_site(sites / "normal", NORMAL)


@pytest.fixture(scope="module")
def hostile(sites: Path) -> dict[str, Path]:
    return write_hostile_sites(sites / "hostile")
