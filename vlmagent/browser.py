"""Drive generated sites in a sandboxed system Chromium (the only module importing playwright).

One Browser per process (Playwright's sync API is single-threaded); one browser process reused
for every site with a fresh context per site, which is the fast shape on small machines. A site
is served only from its own folder by a loopback SiteServer; every other request is aborted
and recorded. Nothing a site does makes `visit_site` raise: stuck pages cost their timeouts,
crashed renderers are recorded, a dead browser is relaunched and the site retried once.
"""
from __future__ import annotations

import tempfile
import time
import uuid
from collections import deque
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from vlmagent import crawl_js as js
from vlmagent.config import BrowserConfig
from vlmagent.crawl_js import BrowserError, find_chromium, line
from vlmagent.siteserver import SiteServer, resolve
from vlmagent.types import Interaction, PageVisit, SiteVisit

BASE_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage"]
# Defence in depth under the route sandbox: no host name resolves, and anything that is not
# loopback goes to a proxy on the discard port, which refuses.
NET_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9", "--dns-prefetch-disable"]
__all__ = ["Browser", "BrowserError", "find_chromium"]
_DEAD = "the page stopped responding or crashed"


class _BrowserDied(Exception):
    pass


class _PageOver(Exception):
    """Stop driving this page (stuck, crashed, closed, or an error status)."""


class Browser:
    """A lazily launched, self-healing Chromium. Use as a context manager or call close().

    Not thread-safe (Playwright's sync API): one per process, as the scoring workers do.
    """

    def __init__(self, cfg: BrowserConfig | None = None) -> None:
        self.cfg = cfg or BrowserConfig()
        self._pw = None
        self._browser = None
        self._marker = ""  # a flag on the browser's command line: finds exactly our process
        self._dog = js.Watchdog(self.pid)
        self._desktop = {"width": self.cfg.viewport_width, "height": self.cfg.viewport_height}

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pid(self) -> int | None:
        """Process id of the running browser, or None."""
        return js.browser_pid(self._marker)

    def _ensure(self):
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        self._teardown()
        exe = find_chromium(self.cfg)
        self._pw = self._pw or sync_playwright().start()
        self._marker = uuid.uuid4().hex
        args = BASE_ARGS + NET_ARGS + [f"--js-flags=--max-old-space-size={self.cfg.js_heap_mb}",
                                       f"--vlmagent-instance={self._marker}", *self.cfg.extra_args]
        try:
            self._browser = self._pw.chromium.launch(executable_path=exe, args=args,
                                                     headless=True, timeout=30_000)
        except PlaywrightError as e:
            raise BrowserError(f"could not launch {exe}: {line(e)}") from None
        return self._browser

    def _teardown(self) -> None:
        """Kill the browser outright: it died or stopped answering. Relaunched on next use."""
        if self._browser is not None:
            js.kill(self.pid())
            try:
                self._browser.close()
            except Exception:  # already gone; nothing left to free
                pass
        self._browser = None

    def close(self) -> None:
        if self._browser is not None and self._browser.is_connected():
            try:
                with self._dog.guard(10.0):
                    self._browser.close()
            except Exception:
                pass
        self._teardown()
        if self._pw is not None:
            self._pw.stop()
            self._pw = None

    def _alive(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    # ------------------------------------------------------------ sandbox
    def _context(self, run: js.Run, width: int, height: int) -> BrowserContext:
        browser = self._ensure()
        with self._dog.guard(self.cfg.nav_timeout_s):
            ctx = browser.new_context(
                viewport={"width": width, "height": height}, device_scale_factor=1,
                service_workers="block", reduced_motion="reduce", locale="en-US",
                timezone_id="UTC", color_scheme="light", accept_downloads=False)
            ctx.set_default_timeout(self.cfg.action_timeout_s * 1000)  # safety net only
            ctx.set_default_navigation_timeout(self.cfg.nav_timeout_s * 1000)
            ctx.add_init_script(js.INIT)
            ctx.route("**/*", run.on_route)
            ctx.route_web_socket("**/*", lambda ws: (run.block(f"GET {ws.url}"), ws.close()))
        ctx.on("page", lambda page: self._popup(run, page))
        return ctx

    def _popup(self, run: js.Run, page: Page) -> None:
        if not run.creating_page:  # window.open is stubbed; this catches target=_blank & co.
            run.visit.popups += 1
            try:
                page.close()
            except PlaywrightError:
                pass

    def _new_page(self, ctx: BrowserContext, run: js.Run) -> Page:
        """A page whose events land in run.pv (the PageVisit being filled at the time)."""
        run.creating_page = True
        try:
            with self._dog.guard(self.cfg.nav_timeout_s):
                page = ctx.new_page()
        finally:
            run.creating_page = False

        def crash(_) -> None:  # a renderer our watchdog killed was stuck: a timeout, not a crash
            pv = run.pv
            pv.timed_out, pv.crashed = pv.timed_out or self._dog.fired, not self._dog.fired

        def dialog(d) -> None:
            run.visit.dialogs += 1
            try:
                d.accept() if d.type == "beforeunload" else d.dismiss()
            except PlaywrightError:
                pass

        page.on("console", run.on_console)
        page.on("requestfailed", run.on_failed)
        page.on("response", run.on_response)
        page.on("pageerror", run.on_pageerror)
        page.on("crash", crash)
        page.on("dialog", dialog)
        return page

    # ------------------------------------------------------------ small steps
    def _eval(self, page: Page, script: str, arg: object = None):
        with self._dog.guard(self.cfg.action_timeout_s + 1.0):  # evaluate has no timeout
            return page.evaluate(script, arg)

    def _resize(self, page: Page, width: int, height: int) -> None:
        with self._dog.guard(self.cfg.action_timeout_s + 1.0):  # waits on the renderer too
            page.set_viewport_size({"width": width, "height": height})

    def _goto(self, page: Page, run: js.Run, url: str):
        run.own_nav = True
        try:
            return page.goto(url, wait_until="load", timeout=run.ms(self.cfg.nav_timeout_s))
        finally:
            run.own_nav = False

    def _settle(self, page: Page, run: js.Run, navs_before: int) -> None:
        """Wait settle_ms; while the page keeps navigating (loops are cut after
        max_navigations_per_page), wait for each new document's load and settle again."""
        page.wait_for_timeout(self.cfg.settle_ms)
        for _ in range(self.cfg.max_navigations_per_page + 2):
            if run.nav_requests == navs_before or run.over():
                return
            navs_before = run.nav_requests
            try:
                page.wait_for_load_state("load", timeout=run.ms(self.cfg.nav_timeout_s))
            except PlaywrightTimeout:
                return
            # A page that navigated must then stay quiet a little longer: a reload loop's
            # next navigation can start well after settle_ms.
            page.wait_for_timeout(max(self.cfg.settle_ms, 250))

    def _state(self, page: Page, run: js.Run) -> tuple[int, float, int]:
        """(mutations, document token, dialogs+popups so far) of the current document; also
        collects the neutralised dialogs/popups into the SiteVisit."""
        muts, doc, dialogs, popups, effects = self._eval(page, js.STATE)
        run.visit.dialogs += int(dialogs)
        run.visit.popups += int(popups)
        return int(muts), float(doc), int(effects)

    def _shot(self, page: Page, run: js.Run, width: int, height: int) -> bytes:
        """Full-page PNG capped at max_screenshot_height.

        The viewport is stretched to the capped height and shot as a viewport: Playwright's
        full_page lays out the whole document at full height, seconds on a huge page. Drawing
        can be as slow as loading, so the screenshot gets the navigation timeout.
        """
        self._resize(page, width, max(1, min(int(height or 1), self.cfg.max_screenshot_height)))
        return page.screenshot(animations="disabled", timeout=run.ms(self.cfg.nav_timeout_s))

    def _close(self, target: Page | BrowserContext) -> None:
        try:
            with self._dog.guard(self.cfg.action_timeout_s + 2.0):
                if isinstance(target, BrowserContext) and not target.pages:
                    # Drop paused requests quietly (a popup's late ones would warn at exit);
                    # never with a page open: unroute_all hangs on a page stuck in a script.
                    target.unroute_all(behavior="ignoreErrors")
                target.close()
        except Exception:
            pass
        if not self._alive():
            self._teardown()

    # ------------------------------------------------------------ sites
    def visit_site(self, root: str | Path, shots_dir: str | Path | None = None,
                   deadline: float | None = None) -> SiteVisit:
        """Crawl the site in `root` and report what happened; never raises for site behaviour.

        Screenshots go to shots_dir as p{i}-desktop.png / p{i}-mobile.png (desktop ones are
        always taken, for `blank`, but only written when shots_dir is given). If the browser
        dies mid-site it is relaunched and the site retried once, with a fresh budget.
        Raises BrowserError only when Chromium cannot be found or launched at all.
        `deadline` (time.monotonic()) caps the site budget, e.g. to a reward stage's timeout.
        """
        start = time.monotonic()
        for _ in range(2):
            visit = SiteVisit()
            try:
                self._crawl(Path(root), Path(shots_dir) if shots_dir else None, visit, deadline)
                break
            except BrowserError:
                raise
            except Exception as e:  # never raise for the site; a dead browser: retry once
                if isinstance(e, _BrowserDied) or not self._alive():
                    self._teardown()  # relaunched by the next _ensure
                    visit.error = f"browser died: {line(e)}"
                    continue
                visit.error = f"{type(e).__name__}: {line(e)}"  # a bug or an odd browser state
                break
        visit.seconds = round(time.monotonic() - start, 3)
        return visit

    def _crawl(self, root: Path, shots: Path | None, visit: SiteVisit,
               deadline: float | None) -> None:
        cfg = self.cfg
        budget = time.monotonic() + cfg.site_budget_s
        with SiteServer(root) as server:
            run = js.Run(server, visit, min(budget, deadline) if deadline else budget,
                         cfg.max_navigations_per_page)
            ctx = self._context(run, cfg.viewport_width, cfg.viewport_height)
            try:
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
            finally:
                if run.page is not None:  # first, so the context can drop its routes quietly
                    self._close(run.page)
                self._close(ctx)

    def _visit_page(self, ctx: BrowserContext, run: js.Run, path: str, index: int,
                    shots: Path | None) -> PageVisit:
        pv = run.pv = PageVisit(path=path)
        self._dog.fired, run.navs = False, 0
        run.page_deadline = time.monotonic() + self.cfg.page_budget_s
        # One page serves the whole site (a new page costs a renderer start, ~0.1 s); it is
        # replaced only after it got stuck or crashed.
        page = run.page if run.page is not None else self._new_page(ctx, run)
        run.page = page
        try:
            for step in (self._load, self._observe, self._screens, self._clicks, self._forms):
                if run.over():
                    pv.timed_out = True
                    break
                try:
                    step(page, run, pv, index, shots)
                except PlaywrightError as e:
                    self._check(page, run, pv, step.__name__.lstrip("_"), e)
                except (_PageOver, _BrowserDied):
                    raise
                except Exception as e:  # odd page state (a 0-px screenshot, ...): note, go on
                    pv.dom.setdefault("errors", []).append(f"{step.__name__}: {e!r}"[:300])
        except _PageOver:
            pass
        finally:
            try:
                if page.is_closed() or pv.crashed or pv.timed_out:
                    raise PlaywrightError("unusable")
                self._state(page, run)  # collect the last dialog/popup counts
                if page.viewport_size != self._desktop:  # a step stopped halfway
                    self._resize(page, self.cfg.viewport_width, self.cfg.viewport_height)
            except PlaywrightError:
                self._close(page)
                run.page = None
            run.page_deadline = float("inf")
        if not self._alive():
            raise _BrowserDied("the browser stopped answering")
        return pv

    def _check(self, page: Page, run: js.Run, pv: PageVisit, step: str, err: Exception) -> None:
        """After a failed step: raise _BrowserDied or _PageOver, or return if the page answers."""
        if not self._alive():
            raise _BrowserDied(f"{step}: {line(err)}")
        pv.dom.setdefault("errors", []).append(run.clean(f"{step}: {line(err)}"))
        if pv.crashed or page.is_closed():
            raise _PageOver
        try:  # a page stuck in a script cannot run this, and it does time out
            page.wait_for_function("true", timeout=run.ms(self.cfg.action_timeout_s))
        except PlaywrightError:
            pv.timed_out = True
            raise _PageOver from None

    # ------------------------------------------------------------ page steps
    def _load(self, page: Page, run: js.Run, pv: PageVisit, index: int, shots: Path | None) -> None:
        t = time.monotonic()
        try:
            resp = self._goto(page, run, run.origin + pv.path)
            pv.status = resp.status if resp else pv.status
        except PlaywrightTimeout:
            pv.timed_out = True
            pv.load_error = f"load event not fired within {self.cfg.nav_timeout_s:g}s"
        except PlaywrightError as e:
            pv.load_error = run.clean(line(e))
        pv.load_seconds = round(time.monotonic() - t, 3)
        if pv.load_error and not pv.timed_out:
            raise _PageOver
        if pv.timed_out:  # maybe just slow, maybe stuck in a script: find out cheaply
            self._check(page, run, pv, "load", PlaywrightTimeout(pv.load_error or ""))
        if pv.status is not None and pv.status >= 400:
            raise _PageOver

    def _observe(self, page: Page, run: js.Run, pv: PageVisit, index: int, shots: Path | None):
        navs = run.nav_requests
        try:
            before: int | None = self._state(page, run)[0]
        except PlaywrightError:  # already navigating again (a reload loop): settle first
            before, navs = None, -1
        self._settle(page, run, navs)
        for _ in range(self.cfg.max_navigations_per_page + 1):
            try:
                obs = self._eval(page, js.OBSERVE)
                break
            except PlaywrightError as e:  # a navigation replaced the document: settle, retry
                if ("destroyed" not in str(e) and "navigat" not in str(e)) or run.over():
                    raise
                before = None
                self._settle(page, run, -1)
        else:
            raise PlaywrightError("the page never stopped navigating")
        pv.title, pv.visible_text_chars, pv.dom_nodes = obs["title"], obs["text"], obs["nodes"]
        pv.viewport_meta = obs["viewport_meta"]
        links = (js.site_path(run.origin, url) for url in obs["links"])
        pv.internal_links = list(dict.fromkeys(p for p in links if p))
        noise = 0 if before is None else max(0, obs["muts"] - before)  # mutations while idle
        pv.dom.update(obs["counts"], height=obs["height"], navigations=run.navs,
                      mutation_noise=noise)
        run.home, run.dirty = page.url, False

    def _screens(self, page: Page, run: js.Run, pv: PageVisit, index: int, shots: Path | None):
        cfg = self.cfg
        png = self._shot(page, run, cfg.viewport_width, pv.dom.get("height", 0))
        pv.blank = js.is_blank(png)
        if shots:
            shots.mkdir(parents=True, exist_ok=True)
            (shots / f"p{index}-desktop.png").write_bytes(png)
            pv.screenshot_desktop = str(shots / f"p{index}-desktop.png")
        self._resize(page, cfg.mobile_width, cfg.mobile_height)
        mobile = self._eval(page, js.MOBILE)
        pv.mobile_overflow_px = int(mobile["overflow"])
        if shots:
            png = self._shot(page, run, cfg.mobile_width, mobile["height"])
            (shots / f"p{index}-mobile.png").write_bytes(png)
            pv.screenshot_mobile = str(shots / f"p{index}-mobile.png")
        self._resize(page, cfg.viewport_width, cfg.viewport_height)

    def _interact(self, page: Page, run: js.Run, pv: PageVisit, kind: str, target: str,
                  before: tuple[int, float, int], url: str, navs: int, error: str | None) -> bool:
        """Settle, then record whether the action changed anything; True if the page left."""
        self._settle(page, run, navs)
        now = page.url
        try:
            after = self._state(page, run)
        except PlaywrightError:
            if self._dog.fired or pv.crashed:  # the action froze or killed the page
                pv.interactions.append(Interaction(kind, target, False, None, _DEAD))
                raise
            after = (0, -2.0, 0)  # the document was being replaced while we read it
        left = after[1] != before[1]  # a new document token: the page navigated
        changed = (left or run.nav_requests > navs or now.rstrip("#") != url.rstrip("#")
                   or after[2] > before[2]  # it opened a dialog or a (neutralised) popup
                   or after[0] - before[0] > pv.dom.get("mutation_noise", 0))
        dest = js.site_path(run.origin, now) if left else None
        pv.interactions.append(Interaction(kind, target, changed, dest, error))
        return left

    def _clicks(self, page: Page, run: js.Run, pv: PageVisit, index: int, shots: Path | None):
        limit = self.cfg.max_clicks_per_page
        targets = self._eval(page, js.CANDIDATES, limit) or []
        run.dirty = bool(targets)
        for i, target in enumerate(targets):
            if run.over():
                pv.timed_out = True
                return
            before, url, navs, error = self._state(page, run), page.url, run.nav_requests, None
            try:
                with self._dog.guard(self.cfg.action_timeout_s + 1.0):
                    handle = page.evaluate_handle(js.CLICK_TARGET, i).as_element()
                if handle is None:
                    raise PlaywrightError("target is gone")
                handle.click(timeout=run.ms(self.cfg.action_timeout_s))
            except PlaywrightError as e:
                if self._dog.fired or pv.crashed:
                    pv.interactions.append(Interaction("click", target, False, None, _DEAD))
                    raise
                if run.nav_requests == navs:  # a click that navigated may report a detach
                    error = run.clean(line(e))
            if self._interact(page, run, pv, "click", target, before, url, navs, error):
                self._goto(page, run, run.home)  # back to the page for the next click
                self._eval(page, js.CANDIDATES, limit)

    def _forms(self, page: Page, run: js.Run, pv: PageVisit, index: int, shots: Path | None):
        for j in range(min(int(pv.dom.get("forms", 0)), self.cfg.max_forms_per_page)):
            if run.over():
                pv.timed_out = True
                return
            if j or run.dirty:  # a fresh copy of the page for every form
                self._state(page, run)
                self._goto(page, run, run.home)
            run.dirty = True
            filled = self._eval(page, js.FILL, j)
            if not filled:
                return
            before, url, navs = self._state(page, run), page.url, run.nav_requests
            valid = self._eval(page, js.SUBMIT, j)
            error = None if valid else "form still invalid after filling"
            self._interact(page, run, pv, "form", filled["target"], before, url, navs, error)

    # ------------------------------------------------------------ rendering
    def screenshot_html(self, html: str, width: int = 1280, height: int = 800,
                        full_page: bool = False) -> bytes:
        """PNG of `html` rendered in the same sandbox (served from a temp dir on loopback).

        A page that never finishes loading is shot as it is; raises BrowserError only when
        no screenshot can be taken at all.
        """
        for _ in range(2):
            try:
                return self._render(html, width, height, full_page)
            except (_BrowserDied, PlaywrightError) as e:
                if self._alive():
                    raise BrowserError(f"could not render: {line(e)}") from None
                self._teardown()
        raise BrowserError("the browser died twice while rendering")

    def _render(self, html: str, width: int, height: int, full_page: bool) -> bytes:
        with tempfile.TemporaryDirectory(prefix="vlmagent-render-") as tmp:
            Path(tmp, "index.html").write_text(html, encoding="utf-8")
            with SiteServer(tmp) as server:
                run = js.Run(server, SiteVisit(), time.monotonic() + self.cfg.page_budget_s,
                             self.cfg.max_navigations_per_page)
                ctx = self._context(run, width, height)
                try:
                    run.pv = PageVisit(path="/index.html")
                    page = self._new_page(ctx, run)
                    try:
                        self._goto(page, run, server.base_url + "/index.html")
                    except PlaywrightTimeout:  # shoot whatever is there, unless it is stuck
                        try:
                            page.wait_for_function("true", timeout=self.cfg.action_timeout_s * 1000)
                        except PlaywrightTimeout:
                            raise BrowserError("could not render: the page never finished "
                                               "loading and its scripts do not yield") from None
                    tall = self._eval(page, js.MOBILE)["height"] if full_page else height
                    return self._shot(page, run, width, tall)
                finally:
                    self._close(ctx)
