"""The state of one site visit (or one render), `Run`, shared with the browser context's event
handlers: it holds the sandbox's request router, fills the PageVisit being driven from page
events, and keeps the page and site budgets. Also `site_path`, the URL helper both use.

Playwright-free: browser.py hands it route, request, response and console objects.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from vlmagent.types import PageVisit, SiteVisit
from vlmagent.web.cdn import Hit, Mirror, Miss
from vlmagent.web.siteserver import SiteServer

# Chromium refuses file:// loads itself (they never reach the router): record them from these.
_LOCAL = re.compile(
    r"(?:Not allowed to load local resource:|Fetch API cannot load) (\S+?)\.?(?=\s|$)")
_CAP = 50  # items per list in a PageVisit, so a spamming page cannot bloat results


def site_path(origin: str, url: str) -> str | None:
    """The path of `url` on the site server ("/about.html"), or None if it is elsewhere."""
    if url != origin and not url.startswith(origin + "/"):
        return None
    return urlsplit(url).path or "/"


@dataclass
class Run:
    """State of one site visit (or one render), shared with the context's event handlers."""

    server: SiteServer
    visit: SiteVisit
    deadline: float
    max_navs: int  # page-initiated main-frame navigations allowed per page
    page_deadline: float = float("inf")
    own_nav: bool = False  # the next main-frame navigation is ours: not counted against the page
    navs: int = 0  # page-initiated main-frame navigations on the current page
    nav_requests: int = 0  # every main-frame navigation request, ours included
    creating_page: bool = False
    home: str = ""  # URL of the current page once loaded: clicks and forms come back to it
    dirty: bool = False  # the current page was clicked since it loaded
    nav_status: int | None = None  # HTTP status of the latest main-frame navigation
    nav_url: str | None = None  # and its URL
    inflight: set = field(default_factory=set)  # requests not finished or failed yet (crawl
    # waits on them); cleared at each of our navigations, whose old requests may never report
    blocked: set[str] = field(default_factory=set)
    page: Any = None  # the Playwright page driving this site (reused from page to page)
    pv: PageVisit = field(default_factory=lambda: PageVisit(path="/"))  # receives page events
    measure: str | None = None  # a later stage's in-page script, run at each viewport (shots)
    mirror: Mirror | None = None  # known CDN URLs answered offline (None: all blocked)
    mirrored: set[str] = field(default_factory=set)

    @property
    def origin(self) -> str:
        return self.server.base_url

    def clean(self, text: str) -> str:
        """Origin URLs become site paths, so results never carry the random port."""
        return text.replace(self.origin, "")[:300]

    def over(self) -> bool:
        return time.monotonic() >= min(self.deadline, self.page_deadline)

    def ms(self, limit_s: float) -> float:
        """A Playwright timeout: `limit_s`, cut to what is left of the page and site budgets."""
        left = min(self.deadline, self.page_deadline) - time.monotonic()
        return max(50.0, min(limit_s, left) * 1000.0)

    def block(self, entry: str) -> None:
        """Record a refused request once ("GET https://cdn.example/x.js")."""
        if entry not in self.blocked and len(self.blocked) < 200:
            self.blocked.add(entry)
            self.visit.blocked_requests.append(entry[:500])

    def on_route(self, route: Any) -> None:
        """The sandbox: only the site's own origin (and data:/blob:) goes through, and CDN files
        the mirror has are answered from it; every other request is aborted and recorded, and a
        page's own navigations are cut after max_navs."""
        req = route.request
        try:
            nav = req.is_navigation_request()
            if nav and req.frame.parent_frame is None:
                self.nav_requests += 1
                if self.own_nav:
                    self.own_nav = False
                else:
                    self.navs += 1
                    if self.navs > self.max_navs:  # a reload or redirect loop
                        return route.abort("aborted")  # "aborted" keeps the current document
            if site_path(self.origin, req.url) is not None or req.url.startswith(("data:",
                                                                                   "blob:")):
                return route.continue_()
            if nav and req.frame.parent_frame is None:  # a link, a form or a script leaving the
                entry = f"{req.method} {req.url}"  # site (a form posted to an external service):
                self.blocked.add(entry)  # an interaction outcome, not the site reaching out
                if entry[:500] not in self.visit.left_site and len(self.visit.left_site) < _CAP:
                    self.visit.left_site.append(entry[:500])
                return route.abort("aborted")
            found = None
            if self.mirror is not None and req.method == "GET" and not nav:  # a navigation
                found = self.mirror.resolve(req.url)  # to a CDN would leave the site: blocked
            if isinstance(found, Hit):
                entry = f"GET {req.url} -> {found.answer}"[:500]
                if entry not in self.mirrored and len(self.mirrored) < 200:
                    self.mirrored.add(entry)
                    self.visit.mirrored_requests.append(entry)
                return route.fulfill(status=200, path=found.path, body=found.body,
                                     headers=found.headers)
            if isinstance(found, Miss):  # a known CDN: say why it was not answered
                self.block(f"{req.method} {req.url} (not in mirror: {found.reason})")
                self.blocked.add(f"{req.method} {req.url}")  # so on_failed does not add it again
            else:
                self.block(f"{req.method} {req.url}")
            route.abort("aborted" if nav else "blockedbyclient")
        except Exception:  # playwright's Error: the page went away while the request waited
            pass

    # Page event handlers: they fill the PageVisit being driven at the time (self.pv).
    def _add(self, kind: str, text: str) -> None:
        items = getattr(self.pv, kind)
        if len(items) < _CAP:
            items.append(self.clean(text))

    def on_console(self, msg: Any) -> None:
        if local := _LOCAL.search(msg.text):
            self.block(f"GET {local.group(1)}")
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self._add("console_errors", msg.text)  # network failures have their own lists

    def on_request(self, req: Any) -> None:
        if len(self.inflight) < 1000:
            self.inflight.add(req)

    def on_finished(self, req: Any) -> None:
        self.inflight.discard(req)

    def on_failed(self, req: Any) -> None:
        self.inflight.discard(req)
        path, why = site_path(self.origin, req.url), req.failure or "failed"
        if path is None and not req.url.startswith(("data:", "blob:")):
            self.block(f"{req.method} {req.url}")  # refused by Chromium or by our router
        elif path is not None and "ERR_ABORTED" not in why:  # aborted: cancelled, not failed
            self._add("failed_requests", f"{path} {why}")

    def on_response(self, resp: Any) -> None:
        # answered: the page can act on it (a 404 whose body is never read never "finishes")
        self.inflight.discard(resp.request)
        path = site_path(self.origin, resp.url)
        if resp.request.is_navigation_request() and resp.frame.parent_frame is None:
            # The page's status is its own first navigation. Later ones (a form posted to a
            # static site's 405, a click or a script that goes elsewhere) are outcomes of
            # interactions, recorded on them (nav_status), never the page's load status.
            self.nav_status, self.nav_url = resp.status, resp.url
            if self.pv.status is None:
                self.pv.status = resp.status
        if path is not None and resp.status >= 400:
            self._add("http_errors", f"{resp.status} {path}")

    def on_pageerror(self, err: Any) -> None:
        self._add("page_errors", f"{err.name or 'Error'}: {err.message}")
