"""Drive one site's pages: load, observe, screenshots, the mobile check, clicks and forms.

Kept free of playwright (only browser.py imports it): browser.py owns the process, the sandbox
and page lifecycle, and hands this module page objects plus a `Driver` that carries Playwright's
two error classes and the lifecycle calls the crawl needs. What counts as a finding, how long to
wait and when to give up on a page all live here.
"""
from __future__ import annotations

import io
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmagent.config import BrowserConfig
from vlmagent.types import Interaction, PageVisit
from vlmagent.web.js import load
from vlmagent.web.run import Run, site_path
from vlmagent.web.siteserver import resolve
from vlmagent.web.watchdog import Watchdog

_DEAD = "the page stopped responding or crashed"
QUIET_S = 2.0  # longest wait for a page's requests in flight before it is observed


class BrowserDied(Exception):
    """The browser process stopped answering: its owner relaunches it and retries."""


class PageOver(Exception):
    """Stop driving this page (stuck, crashed, closed, or an error status)."""


@dataclass(frozen=True)
class Driver:
    """What the crawl needs from browser.py, passed in so this module never imports playwright."""

    error: type[Exception]  # playwright's Error: any failed call on a page
    timeout: type[Exception]  # playwright's TimeoutError (a subclass of `error`)
    new_page: Callable[[Any, Run], Any]  # (context, run) -> a page whose events land in run.pv
    close: Callable[[Any], None]  # close a page or context; tears down a browser that died
    alive: Callable[[], bool]  # the browser process still answers


def line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def is_blank(png: bytes) -> bool:
    """True when a screenshot is near-uniform: every channel's std < 1 after a 2x2 box reduce.

    A rendered page that shows nothing is exactly uniform; one short word already gives a std
    near 2, so the threshold sits below that to call only empty renders blank.
    """
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
        if rgb.width >= 2 and rgb.height >= 2:
            rgb = rgb.reduce(2)
        pixels = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
    return bool(pixels.size == 0 or pixels.std(axis=0).max() < 1.0)


class Crawler:
    """The page-driving half of Browser; one per Browser, sharing its watchdog."""

    def __init__(self, cfg: BrowserConfig, dog: Watchdog, driver: Driver) -> None:
        self.cfg, self._dog, self._d = cfg, dog, driver
        self._desktop = {"width": cfg.viewport_width, "height": cfg.viewport_height}

    # ------------------------------------------------------------ small steps
    def evaluate(self, page: Any, script: str, arg: object = None) -> Any:
        with self._dog.guard(self.cfg.action_timeout_s + 1.0):  # evaluate has no timeout
            return page.evaluate(script, arg)

    def resize(self, page: Any, width: int, height: int) -> None:
        with self._dog.guard(self.cfg.action_timeout_s + 1.0):  # waits on the renderer too
            page.set_viewport_size({"width": width, "height": height})

    def goto(self, page: Any, run: Run, url: str) -> Any:
        run.own_nav, run.inflight = True, set()
        try:
            return page.goto(url, wait_until="load", timeout=run.ms(self.cfg.nav_timeout_s))
        finally:
            run.own_nav = False

    def settle(self, page: Any, run: Run, navs_before: int) -> None:
        """Wait settle_ms and for the page's requests in flight (a fetch() whose answer it then
        renders); while the page keeps navigating (loops are cut after
        max_navigations_per_page), wait for each new document's load and settle again."""
        page.wait_for_timeout(self.cfg.settle_ms)
        self._quiet(page, run)
        for _ in range(self.cfg.max_navigations_per_page + 2):
            if run.nav_requests == navs_before or run.over():
                return
            navs_before = run.nav_requests
            try:
                page.wait_for_load_state("load", timeout=run.ms(self.cfg.nav_timeout_s))
            except self._d.timeout:
                return
            # A page that navigated must then stay quiet a little longer: a reload loop's
            # next navigation can start well after settle_ms.
            page.wait_for_timeout(max(self.cfg.settle_ms, 250))

    @staticmethod
    def _wait_while(page: Any, run: Run, busy: Callable[[], bool]) -> None:
        """Poll `busy` (fed by page events, which Playwright delivers while it waits) for at
        most QUIET_S, within the page and site budgets."""
        end = min(time.monotonic() + QUIET_S, run.deadline, run.page_deadline)
        while busy() and time.monotonic() < end:
            page.wait_for_timeout(25)

    def _quiet(self, page: Any, run: Run) -> None:
        """Until no request of the page is in flight, at most QUIET_S (a page that polls or
        streams never gets quiet), then settle_ms more for what the answers render."""
        if run.inflight:
            self._wait_while(page, run, lambda: bool(run.inflight))
            page.wait_for_timeout(self.cfg.settle_ms)

    def state(self, page: Any, run: Run) -> tuple[int, float, int, int]:
        """(mutations, document token, dialogs+popups so far, navigations started) of the current
        document; also collects the neutralised dialogs/popups into the SiteVisit."""
        muts, doc, dialogs, popups, effects, leaving = self.evaluate(page, load("state"))
        run.visit.dialogs += int(dialogs)
        run.visit.popups += int(popups)
        return int(muts), float(doc), int(effects), int(leaving)

    def shot(self, page: Any, run: Run, width: int, height: int) -> bytes:
        """Full-page PNG capped at max_screenshot_height.

        The viewport is stretched to the capped height and shot as a viewport: Playwright's
        full_page lays out the whole document at full height, seconds on a huge page. Drawing
        can be as slow as loading, so the screenshot gets the navigation timeout.
        """
        self.resize(page, width, max(1, min(int(height or 1), self.cfg.max_screenshot_height)))
        return page.screenshot(animations="disabled", timeout=run.ms(self.cfg.nav_timeout_s))

    # ------------------------------------------------------------ sites
    def site(self, ctx: Any, run: Run, root: Path, shots: Path | None) -> None:
        """Visit the site breadth-first from its index into run.visit, within run.deadline.

        The caller closes run.page and the context afterwards, whatever happens here.
        """
        cfg, visit = self.cfg, run.visit
        first = "/index.html" if resolve(root, "/index.html")[0] == 200 else "/"
        queue, seen = deque([first]), {first, str(resolve(root, first)[1])}
        while queue and len(visit.pages) < cfg.max_pages:
            if time.monotonic() >= run.deadline:
                visit.error = f"site budget of {cfg.site_budget_s:g}s exhausted"
                break
            path = queue.popleft()
            pv = self._visit_page(ctx, run, path, len(visit.pages), shots)
            visit.pages.append(pv)
            for link in pv.internal_links:  # resolve() decides, exactly like the server
                code, file = resolve(root, link)
                if code != 200 and f"{path} -> {link}" not in visit.broken_links:
                    visit.broken_links.append(f"{path} -> {link}")
                elif file and file.suffix.lower() in (".html", ".htm") and not (
                        {str(file), link} & seen):
                    seen |= {str(file), link}
                    queue.append(link)

    def _visit_page(self, ctx: Any, run: Run, path: str, index: int,
                    shots: Path | None) -> PageVisit:
        pv = run.pv = PageVisit(path=path)
        self._dog.fired, run.navs = False, 0
        run.page_deadline = time.monotonic() + self.cfg.page_budget_s
        # One page serves the whole site (a new page costs a renderer start, ~0.1 s); it is
        # replaced only after it got stuck or crashed.
        page = run.page if run.page is not None else self._d.new_page(ctx, run)
        run.page = page
        try:
            for step in (self._load, self._observe, self._screens, self._clicks, self._forms):
                if run.over():
                    pv.timed_out = True
                    break
                try:
                    step(page, run, pv, index, shots)
                except self._d.error as e:
                    self._check(page, run, pv, step.__name__.lstrip("_"), e)
                except (PageOver, BrowserDied):
                    raise
                except Exception as e:  # odd page state (a 0-px screenshot, ...): note, go on
                    pv.dom.setdefault("errors", []).append(f"{step.__name__}: {e!r}"[:300])
        except PageOver:
            pass
        finally:
            try:
                if page.is_closed() or pv.crashed or pv.timed_out:
                    raise self._d.error("unusable")
                self.state(page, run)  # collect the last dialog/popup counts
                if page.viewport_size != self._desktop:  # a step stopped halfway
                    self.resize(page, self.cfg.viewport_width, self.cfg.viewport_height)
            except self._d.error:
                self._d.close(page)
                run.page = None
            run.page_deadline = float("inf")
        if not self._d.alive():
            raise BrowserDied("the browser stopped answering")
        return pv

    def _check(self, page: Any, run: Run, pv: PageVisit, step: str, err: Exception) -> None:
        """After a failed step: raise BrowserDied or PageOver, or return if the page answers."""
        if not self._d.alive():
            raise BrowserDied(f"{step}: {line(err)}")
        pv.dom.setdefault("errors", []).append(run.clean(f"{step}: {line(err)}"))
        if pv.crashed or page.is_closed():
            raise PageOver
        try:  # a page stuck in a script cannot run this, and it does time out
            page.wait_for_function("true", timeout=run.ms(self.cfg.action_timeout_s))
        except self._d.error:
            pv.timed_out = True
            raise PageOver from None

    # ------------------------------------------------------------ page steps
    def _load(self, page: Any, run: Run, pv: PageVisit, index: int, shots: Path | None) -> None:
        t = time.monotonic()
        try:
            resp = self.goto(page, run, run.origin + pv.path)
            pv.status = resp.status if resp else pv.status
        except self._d.timeout:
            pv.timed_out = True
            pv.load_error = f"load event not fired within {self.cfg.nav_timeout_s:g}s"
        except self._d.error as e:
            pv.load_error = run.clean(line(e))
        pv.load_seconds = round(time.monotonic() - t, 3)
        if pv.load_error and not pv.timed_out:
            raise PageOver
        if pv.timed_out:  # maybe just slow, maybe stuck in a script: find out cheaply
            self._check(page, run, pv, "load", self._d.timeout(pv.load_error or ""))
        if pv.status is not None and pv.status >= 400:
            raise PageOver

    def _observe(self, page: Any, run: Run, pv: PageVisit, index: int, shots: Path | None):
        navs = run.nav_requests
        try:
            before: int | None = self.state(page, run)[0]
        except self._d.error:  # already navigating again (a reload loop): settle first
            before, navs = None, -1
        self.settle(page, run, navs)
        for _ in range(self.cfg.max_navigations_per_page + 1):
            try:
                obs = self.evaluate(page, load("observe"))
                break
            except self._d.error as e:  # a navigation replaced the document: settle, retry
                if ("destroyed" not in str(e) and "navigat" not in str(e)) or run.over():
                    raise
                before = None
                self.settle(page, run, -1)
        else:
            raise self._d.error("the page never stopped navigating")
        pv.title, pv.visible_text_chars, pv.dom_nodes = obs["title"], obs["text"], obs["nodes"]
        pv.viewport_meta = obs["viewport_meta"]
        links = (site_path(run.origin, url) for url in obs["links"])
        pv.internal_links = list(dict.fromkeys(p for p in links if p))
        noise = 0 if before is None else max(0, obs["muts"] - before)  # mutations while idle
        pv.dom.update(obs["counts"], height=obs["height"], navigations=run.navs,
                      mutation_noise=noise)
        run.home, run.dirty = page.url, False

    def _screens(self, page: Any, run: Run, pv: PageVisit, index: int, shots: Path | None):
        cfg = self.cfg
        self._measure(page, run, pv, "desktop")  # at the viewport, before shot() stretches it
        png = self.shot(page, run, cfg.viewport_width, pv.dom.get("height", 0))
        pv.blank = is_blank(png)
        if shots:
            shots.mkdir(parents=True, exist_ok=True)
            (shots / f"p{index}-desktop.png").write_bytes(png)
            pv.screenshot_desktop = str(shots / f"p{index}-desktop.png")
        self.resize(page, cfg.mobile_width, cfg.mobile_height)
        self._measure(page, run, pv, "mobile")
        mobile = self.evaluate(page, load("mobile"))
        pv.mobile_overflow_px = int(mobile["overflow"])
        if shots:
            png = self.shot(page, run, cfg.mobile_width, mobile["height"])
            (shots / f"p{index}-mobile.png").write_bytes(png)
            pv.screenshot_mobile = str(shots / f"p{index}-mobile.png")
        self.resize(page, cfg.viewport_width, cfg.viewport_height)

    def _measure(self, page: Any, run: Run, pv: PageVisit, viewport: str) -> None:
        """Run the later stage's script (if any); a failure leaves it to that stage to retry."""
        if run.measure:
            try:
                pv.measures[viewport] = self.evaluate(page, run.measure)
            except self._d.error:
                pv.measures.pop(viewport, None)

    def _after(self, page: Any, run: Run, pv: PageVisit, kind: str, target: str
               ) -> tuple[int, float, int, int]:
        try:
            return self.state(page, run)
        except self._d.error:
            if self._dog.fired or pv.crashed:  # the action froze or killed the page
                pv.interactions.append(Interaction(kind, target, False, None, _DEAD))
                raise
            return (0, -2.0, 0, 0)  # the document was being replaced while we read it

    def _interact(self, page: Any, run: Run, pv: PageVisit, kind: str, target: str,
                  before: tuple[int, float, int, int], url: str, navs: int,
                  error: str | None) -> bool:
        """Settle, then record whether the action changed anything; True if the page left."""
        self.settle(page, run, navs)
        after = self._after(page, run, pv, kind, target)
        if after[1] == before[1] and after[3] > before[3] and run.nav_requests == navs:
            # The page started leaving, but its request has not reached the router yet (a loaded
            # machine): wait for it (at most QUIET_S; a router may intercept it), then settle.
            self._wait_while(page, run, lambda: run.nav_requests == navs)
            self.settle(page, run, navs)
            after = self._after(page, run, pv, kind, target)
        left = after[1] != before[1]  # a new document token: the page navigated
        if left:  # the navigation can commit after settle on a loaded machine: read the page
            try:  # once the new document has loaded
                page.wait_for_load_state("load", timeout=run.ms(self.cfg.nav_timeout_s))
            except self._d.timeout:
                pass
        now = page.url
        changed = (left or run.nav_requests > navs or now.rstrip("#") != url.rstrip("#")
                   or after[2] > before[2]  # it opened a dialog or a (neutralised) popup
                   or after[0] - before[0] > pv.dom.get("mutation_noise", 0))
        # Where it went: the navigation's own response (page.url can still be the old page's)
        dest = site_path(run.origin, run.nav_url or now) if left else None
        status = run.nav_status if left else None
        pv.interactions.append(Interaction(kind, target, changed, dest, error, status))
        return left

    def _clicks(self, page: Any, run: Run, pv: PageVisit, index: int, shots: Path | None):
        limit = self.cfg.max_clicks_per_page
        targets = self.evaluate(page, load("candidates"), limit) or []
        run.dirty = bool(targets)
        for i, target in enumerate(targets):
            if run.over():
                pv.timed_out = True
                return
            before, url, navs, error = self.state(page, run), page.url, run.nav_requests, None
            run.nav_status = run.nav_url = None
            try:
                with self._dog.guard(self.cfg.action_timeout_s + 1.0):
                    handle = page.evaluate_handle(load("click_target"), i).as_element()
                if handle is None:
                    raise self._d.error("target is gone")
                handle.click(timeout=run.ms(self.cfg.action_timeout_s))
            except self._d.error as e:
                if self._dog.fired or pv.crashed:
                    pv.interactions.append(Interaction("click", target, False, None, _DEAD))
                    raise
                if run.nav_requests == navs:  # a click that navigated may report a detach
                    error = run.clean(line(e))
            if self._interact(page, run, pv, "click", target, before, url, navs, error):
                self.goto(page, run, run.home)  # back to the page for the next click
                self.evaluate(page, load("candidates"), limit)

    def _forms(self, page: Any, run: Run, pv: PageVisit, index: int, shots: Path | None):
        for j in range(min(int(pv.dom.get("forms", 0)), self.cfg.max_forms_per_page)):
            if run.over():
                pv.timed_out = True
                return
            if j or run.dirty:  # a fresh copy of the page for every form
                self.state(page, run)
                self.goto(page, run, run.home)
            run.dirty = True
            filled = self.evaluate(page, load("fill"), j)
            if not filled:
                return
            before, url, navs = self.state(page, run), page.url, run.nav_requests
            run.nav_status = run.nav_url = None
            valid = self.evaluate(page, load("submit"), j)
            error = None if valid else "form still invalid after filling"
            self._interact(page, run, pv, "form", filled["target"], before, url, navs, error)
