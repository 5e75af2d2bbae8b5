"""Drive generated sites in a sandboxed system Chromium (the only module importing playwright).

One Browser per process (Playwright's sync API is single-threaded); one browser process reused
for every site with a fresh context per site, which is the fast shape on small machines. A site
is served only from its own folder by a loopback SiteServer; CDN files of popular libraries are
answered from an offline mirror (cdn.py, browser.cdn_mirror); every other request is aborted
and recorded. Nothing a site does makes `visit_site` raise: stuck pages cost their timeouts,
crashed renderers are recorded, a dead browser is relaunched and the site retried once.

This module owns the process, the sandboxed context and page lifecycle; what is done on each
page (load, findings, clicks, forms, screenshots) lives in crawl.py, which gets the Playwright
error classes from here through a `Driver` so that it never imports playwright itself.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from vlmagent.config import BrowserConfig
from vlmagent.types import PageVisit, SiteVisit
from vlmagent.web.cdn import Mirror, MirrorError, mirror_path
from vlmagent.web.crawl import BrowserDied, Crawler, Driver, line
from vlmagent.web.js import load
from vlmagent.web.run import Run
from vlmagent.web.siteserver import SiteServer
from vlmagent.web.watchdog import Watchdog, browser_pid, kill, kill_group

BASE_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage"]
# Defence in depth under the route sandbox: no host name resolves, and anything that is not
# loopback goes to a proxy on the discard port, which refuses.
NET_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9", "--dns-prefetch-disable"]
__all__ = ["Browser", "BrowserError", "find_chromium"]


class BrowserError(RuntimeError):
    """The browser itself cannot be used (not installed, will not launch); never a site fault."""


def find_chromium(cfg: BrowserConfig) -> str:
    """cfg.executable, else $VLMAGENT_CHROMIUM, else chromium / chromium-browser on PATH."""
    explicit = cfg.executable or os.environ.get("VLMAGENT_CHROMIUM", "")
    for name in [explicit] if explicit else ["chromium", "chromium-browser"]:
        if shutil.which(name):
            return str(shutil.which(name))
    where = f"{explicit!r} (browser.executable or $VLMAGENT_CHROMIUM) is missing or not " \
            "executable" if explicit else "no `chromium` or `chromium-browser` on PATH"
    raise BrowserError(f"Chromium not found: {where}. Install it with `apt-get install -y "
                       "chromium` (never `playwright install`) or point browser.executable at it")


class Browser:
    """A lazily launched, self-healing Chromium. Use as a context manager or call close().

    Not thread-safe (Playwright's sync API): one per process, as the scoring workers do.
    """

    def __init__(self, cfg: BrowserConfig | None = None) -> None:
        self.cfg = cfg or BrowserConfig()
        self._pw = None
        self._browser = None
        self._marker = ""  # a flag on the browser's command line: finds exactly our process
        self._group: int | None = None  # the browser's process group (its pid at launch)
        self._mirror: Mirror | None = None  # loaded by the first sandbox (browser.cdn_mirror)
        self._dog = Watchdog(self.pid, lambda: self._group)
        self._crawler = Crawler(self.cfg, self._dog, Driver(
            error=PlaywrightError, timeout=PlaywrightTimeout, new_page=self._new_page,
            close=self._close, alive=self._alive))

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pid(self) -> int | None:
        """Process id of the running browser, or None."""
        return browser_pid(self._marker)

    def _ensure(self):
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        self._teardown()
        if self._dog.killed_driver:  # the watchdog ended a hung driver: start a fresh one
            self._dog.killed_driver = False
            try:
                self._pw.stop()
            except Exception:  # its process is gone; only the Python side is left to drop
                pass
            self._pw = None
        exe = find_chromium(self.cfg)
        try:  # fails when this thread already runs Playwright (e.g. another live Browser)
            self._pw = self._pw or sync_playwright().start()
        except PlaywrightError as e:
            raise BrowserError(f"could not start Playwright: {line(e)}") from None
        self._marker = uuid.uuid4().hex
        args = BASE_ARGS + NET_ARGS + [f"--js-flags=--max-old-space-size={self.cfg.js_heap_mb}",
                                       f"--vlmagent-instance={self._marker}", *self.cfg.extra_args]
        try:
            self._browser = self._pw.chromium.launch(executable_path=exe, args=args,
                                                     headless=True, timeout=30_000)
        except PlaywrightError as e:
            raise BrowserError(f"could not launch {exe}: {line(e)}") from None
        self._group = self.pid()
        return self._browser

    def _teardown(self) -> None:
        """Kill the browser outright: it died or stopped answering. Relaunched on next use."""
        if self._browser is not None:
            kill(self.pid())
            kill_group(self._group)  # and any renderer it left behind
            try:
                self._browser.close()
            except Exception:  # already gone; nothing left to free
                pass
        self._browser, self._group = None, None

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
    def _context(self, run: Run, width: int, height: int) -> BrowserContext:
        if self.cfg.cdn_mirror and self._mirror is None:  # once per Browser: it is read-only
            try:
                self._mirror = Mirror.load(mirror_path(self.cfg))
            except MirrorError as e:
                raise BrowserError(str(e)) from None
        run.mirror = self._mirror if self.cfg.cdn_mirror else None
        browser = self._ensure()
        with self._dog.guard(self.cfg.nav_timeout_s):
            ctx = browser.new_context(
                viewport={"width": width, "height": height}, device_scale_factor=1,
                service_workers="block", reduced_motion="reduce", locale="en-US",
                timezone_id="UTC", color_scheme="light", accept_downloads=False)
            ctx.set_default_timeout(self.cfg.action_timeout_s * 1000)  # safety net only
            ctx.set_default_navigation_timeout(self.cfg.nav_timeout_s * 1000)
            ctx.add_init_script(load("init"))
            ctx.route("**/*", run.on_route)
            ctx.route_web_socket("**/*", lambda ws: (run.block(f"GET {ws.url}"), ws.close()))
        ctx.on("page", lambda page: self._popup(run, page))
        return ctx

    def _popup(self, run: Run, page: Page) -> None:
        if not run.creating_page:  # window.open is stubbed; this catches target=_blank & co.
            run.visit.popups += 1
            try:
                page.close()
            except PlaywrightError:
                pass

    def _new_page(self, ctx: BrowserContext, run: Run) -> Page:
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
        page.on("request", run.on_request)
        page.on("requestfinished", run.on_finished)
        page.on("requestfailed", run.on_failed)
        page.on("response", run.on_response)
        page.on("pageerror", run.on_pageerror)
        page.on("crash", crash)
        page.on("dialog", dialog)
        return page

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
                   deadline: float | None = None, measure: str | None = None) -> SiteVisit:
        """Crawl the site in `root` and report what happened; never raises for site behaviour.

        Screenshots go to shots_dir as p{i}-desktop.png / p{i}-mobile.png (desktop ones are
        always taken, for `blank`, but only written when shots_dir is given). If the browser
        dies mid-site it is relaunched and the site retried once, with a fresh budget.
        Raises BrowserError only when Chromium cannot be found or launched at all.
        `deadline` (time.monotonic()) caps the site budget, e.g. to a reward stage's timeout.
        `measure`: an in-page script (the aesthetics stage's) run on every page at the desktop
        and the mobile viewport, just before each screenshot; results in PageVisit.measures.
        """
        start = time.monotonic()
        for _ in range(2):
            visit = SiteVisit()
            try:
                self._crawl(Path(root), Path(shots_dir) if shots_dir else None, visit, deadline,
                            measure)
                break
            except BrowserError:
                raise
            except Exception as e:  # never raise for the site; a dead browser: retry once
                if isinstance(e, BrowserDied) or not self._alive():
                    self._teardown()  # relaunched by the next _ensure
                    visit.error = f"browser died: {line(e)}"
                    continue
                visit.error = f"{type(e).__name__}: {line(e)}"  # a bug or an odd browser state
                break
        visit.seconds = round(time.monotonic() - start, 3)
        return visit

    def _crawl(self, root: Path, shots: Path | None, visit: SiteVisit,
               deadline: float | None, measure: str | None = None) -> None:
        cfg = self.cfg
        budget = time.monotonic() + cfg.site_budget_s
        with SiteServer(root) as server:
            run = Run(server, visit, min(budget, deadline) if deadline else budget,
                         cfg.max_navigations_per_page, measure=measure)
            ctx = self._context(run, cfg.viewport_width, cfg.viewport_height)
            try:
                self._crawler.site(ctx, run, root, shots)
            finally:
                if run.page is not None:  # first, so the context can drop its routes quietly
                    self._close(run.page)
                self._close(ctx)

    # ------------------------------------------------------------ measuring
    def inspect_pages(self, root: str | Path, paths: list[str], script: str,
                      shoot: bool = True, deadline: float | None = None) -> list[dict]:
        """Load each page of `root` (no clicks, no forms) and run `script` on it at the desktop
        and then the mobile viewport; with `shoot`, also full-page PNGs (capped like visit_site).

        Returns one dict per path: {"path", "desktop", "mobile" (the script's results or None),
        "png_desktop", "png_mobile" (bytes or None), "error" (str or None)}. Never raises for
        site behaviour; raises BrowserError only when Chromium cannot be launched at all.
        Same sandbox and per-page budget as visit_site; `deadline` caps the whole call.
        """
        out = [{"path": p, "desktop": None, "mobile": None, "png_desktop": None,
                "png_mobile": None, "error": None} for p in paths]
        cfg, crawler = self.cfg, self._crawler
        views = (("desktop", cfg.viewport_width, cfg.viewport_height),
                 ("mobile", cfg.mobile_width, cfg.mobile_height))
        end = min(deadline or float("inf"), time.monotonic() + cfg.site_budget_s)
        with SiteServer(Path(root)) as server:
            run = Run(server, SiteVisit(), end, cfg.max_navigations_per_page)
            ctx = self._context(run, cfg.viewport_width, cfg.viewport_height)
            try:
                for rec in out:
                    if run.over():
                        rec["error"] = "out of time"
                        continue
                    run.pv, run.navs = PageVisit(path=rec["path"]), 0
                    run.page_deadline = time.monotonic() + cfg.page_budget_s
                    self._dog.fired = False
                    page = run.page = run.page or self._new_page(ctx, run)
                    try:
                        crawler.goto(page, run, server.base_url + rec["path"])
                        for name, w, h in views:
                            crawler.resize(page, w, h)
                            rec[name] = crawler.evaluate(page, script)
                            if shoot:
                                tall = crawler.evaluate(page, load("mobile"))["height"]
                                rec[f"png_{name}"] = crawler.shot(page, run, w, tall)
                    except (PlaywrightError, BrowserDied) as e:
                        rec["error"] = run.clean(line(e))
                        self._close(page)  # stuck or crashed: the next page gets a fresh one
                        run.page = None
                        if not self._alive():  # relaunched by the next call
                            for r in out:
                                r["error"] = r["error"] or "the browser died"
                            break
            finally:
                if run.page is not None:
                    self._close(run.page)
                self._close(ctx)
        return out

    # ------------------------------------------------------------ rendering
    def screenshot_html(self, html: str, width: int = 1280, height: int = 800,
                        full_page: bool = False) -> bytes:
        """PNG of `html` rendered in the same sandbox (served from a temp dir on loopback).

        A page that never finishes loading is shot as it is; raises BrowserError only when
        no screenshot can be taken at all.
        """
        with tempfile.TemporaryDirectory(prefix="vlmagent-render-") as tmp:
            Path(tmp, "index.html").write_text(html, encoding="utf-8")
            return self._screenshot(Path(tmp), "/index.html", width, height, full_page)

    def screenshot_site(self, root: str | Path, page: str = "/index.html", width: int = 1280,
                        height: int = 800, full_page: bool = False) -> bytes:
        """PNG of one page of the site folder `root`, in the same sandbox as visit_site.

        `page` is a URL path on the site ("/about.html", %-escaped like a link). The page is
        served by its own SiteServer from `root` only, every other request blocked, dialogs
        neutralised, within page_budget_s; nothing is crawled or clicked. A missing page is
        shot as the server's 404 page. Raises BrowserError only when no screenshot can be
        taken at all (no Chromium, or a page whose scripts never yield).
        """
        return self._screenshot(Path(root), "/" + page.lstrip("/"), width, height, full_page)

    def _screenshot(self, root: Path, page: str, width: int, height: int,
                    full_page: bool) -> bytes:
        for _ in range(2):
            try:
                return self._render(root, page, width, height, full_page)
            except (BrowserDied, PlaywrightError) as e:
                if self._alive():
                    raise BrowserError(f"could not render: {line(e)}") from None
                self._teardown()
        raise BrowserError("the browser died twice while rendering")

    def _render(self, root: Path, path: str, width: int, height: int, full_page: bool) -> bytes:
        crawler = self._crawler
        with SiteServer(root) as server:
            run = Run(server, SiteVisit(), time.monotonic() + self.cfg.page_budget_s,
                         self.cfg.max_navigations_per_page)
            ctx = self._context(run, width, height)
            try:
                run.pv = PageVisit(path=path)
                page = self._new_page(ctx, run)
                try:
                    crawler.goto(page, run, server.base_url + path)
                except PlaywrightTimeout:  # shoot whatever is there, unless it is stuck
                    try:
                        page.wait_for_function("true", timeout=self.cfg.action_timeout_s * 1000)
                    except PlaywrightTimeout:
                        raise BrowserError("could not render: the page never finished "
                                           "loading and its scripts do not yield") from None
                tall = crawler.evaluate(page, load("mobile"))["height"] if full_page else height
                return crawler.shot(page, run, width, tall)
            finally:
                self._close(ctx)
