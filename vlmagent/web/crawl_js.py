"""Playwright-free helpers shared by browser.py and crawl.py: the JavaScript run inside crawled
pages, per-site crawl state (`Run`, which also holds the sandbox's request router and the page
event handlers), URL helpers, and the process watchdog that unsticks hung browser calls.

Every snippet tolerates a page that redefined globals (forms with an input named "submit", a
missing body, no init script).
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vlmagent.web.siteserver import SiteServer
from vlmagent.types import PageVisit, SiteVisit

# Chromium refuses file:// loads itself (they never reach the router): record them from these.
_LOCAL = re.compile(
    r"(?:Not allowed to load local resource:|Fetch API cannot load) (\S+?)\.?(?=\s|$)")
_CAP = 50  # items per list in a PageVisit, so a spamming page cannot bloat results


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
    blocked: set[str] = field(default_factory=set)
    page: Any = None  # the Playwright page driving this site (reused from page to page)
    pv: PageVisit = field(default_factory=lambda: PageVisit(path="/"))  # receives page events
    measure: str | None = None  # a later stage's in-page script, run at each viewport (shots)

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
        """The sandbox: only the site's own origin (and data:/blob:) goes through; every other
        request is aborted and recorded, and a page's own navigations are cut after max_navs."""
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

    def on_failed(self, req: Any) -> None:
        path, why = site_path(self.origin, req.url), req.failure or "failed"
        if path is None and not req.url.startswith(("data:", "blob:")):
            self.block(f"{req.method} {req.url}")  # refused by Chromium or by our router
        elif path is not None and "ERR_ABORTED" not in why:  # aborted: cancelled, not failed
            self._add("failed_requests", f"{path} {why}")

    def on_response(self, resp: Any) -> None:
        path = site_path(self.origin, resp.url)
        if resp.request.is_navigation_request() and resp.frame.parent_frame is None:
            self.pv.status = resp.status
        if path is not None and resp.status >= 400:
            self._add("http_errors", f"{resp.status} {path}")

    def on_pageerror(self, err: Any) -> None:
        self._add("page_errors", f"{err.name or 'Error'}: {err.message}")


# Installed in every frame before any site script: neutralises dialogs, print, window.open and
# links/forms that would open a new tab (counting them all), and counts DOM mutations so a
# click can be judged by what it changed. `effects` counts dialogs+popups and is never reset.
INIT = r"""(() => {
  if (window.__vlm) return;
  const s = {dialogs: 0, popups: 0, effects: 0, muts: 0, targets: [], doc: Math.random()};
  Object.defineProperty(window, '__vlm', {value: s});
  const stub = (k, v) => function () { s[k]++; s.effects++; return v; };
  window.alert = stub('dialogs'); window.confirm = stub('dialogs', false);
  window.prompt = stub('dialogs', null); window.print = stub('dialogs');
  window.open = stub('popups', null);
  const newTab = t => !!t && !/^_(self|top|parent)$/i.test(t) &&
    ![...document.querySelectorAll('iframe,frame')].some(f => f.name === t);
  const popup = e => { e.preventDefault(); s.popups++; s.effects++; };
  addEventListener('click', e => {
    const a = e.target && e.target.closest && e.target.closest('a[href],area[href]');
    if (a && !e.defaultPrevented && newTab(a.getAttribute('target'))) popup(e);
  }, true);
  addEventListener('submit', e => {
    if (e.target && newTab(e.target.getAttribute('target'))) popup(e);
  }, true);
  new MutationObserver(r => { s.muts += r.length; }).observe(document,
    {subtree: true, childList: true, attributes: true, characterData: true});
})()"""

_DESCRIBE = r"""const describe = el => {
  let s = el.tagName.toLowerCase();
  const cls = typeof el.className === 'string' ? el.className.trim().split(/\s+/)[0] : '';
  if (el.id) s += '#' + el.id; else if (cls) s += '.' + cls;
  const t = (el.innerText || el.value || el.getAttribute('aria-label') || '')
    .trim().replace(/\s+/g, ' ').slice(0, 40);
  return t ? s + " '" + t + "'" : s;
};"""

# Mutation count and document token (a new document means the page navigated), plus the
# dialog/popup counters, which are reset on read so repeated reads of one document add up.
STATE = r"""() => { const s = window.__vlm; if (!s) return [0, -1, 0, 0, 0];
  const r = [s.muts, s.doc, s.dialogs, s.popups, s.effects]; s.dialogs = 0; s.popups = 0;
  return r; }"""

OBSERVE = r"""() => {
  const d = document, b = d.body, de = d.documentElement, q = s => d.querySelectorAll(s).length;
  const vm = d.querySelector('meta[name="viewport" i]');
  const imgs = [...d.images];
  return {
    title: String(d.title || '').slice(0, 200),
    text: b ? (b.innerText || '').trim().length : 0,
    nodes: d.getElementsByTagName('*').length,
    links: [...d.querySelectorAll('a[href]')].slice(0, 1000).map(a => String(a.href)),
    viewport_meta: !!(vm && /width\s*=\s*device-width/i.test(vm.getAttribute('content') || '')),
    height: Math.max(de ? de.scrollHeight : 0, b ? b.scrollHeight : 0),
    muts: window.__vlm ? window.__vlm.muts : 0,
    counts: {images: imgs.length, broken_images: imgs.filter(i => i.complete && !i.naturalWidth)
      .length, forms: d.forms.length, buttons: q('button,[role=button],input[type=button]'),
      inputs: q('input,select,textarea'), scripts: q('script'), headings: q('h1,h2,h3'),
      iframes: q('iframe'), links: q('a[href]')},
  };
}"""

MOBILE = r"""() => { const de = document.documentElement, b = document.body;
  return {overflow: Math.max(0, (de ? de.scrollWidth : 0) - innerWidth),
          height: Math.max(de ? de.scrollHeight : 0, b ? b.scrollHeight : 0)}; }"""

# Visible clickables outside forms (forms are driven separately); stored for CLICK_TARGET.
CANDIDATES = r"""max => {""" + _DESCRIBE + r"""
  const sel = 'button,[role=button],input[type=button],input[type=submit],[onclick],a[href^="#"]';
  const out = [];
  for (const el of document.querySelectorAll(sel)) {
    if (out.length >= max) break;
    if (el.closest('form') || el.disabled) continue;
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    if (r.width < 1 || r.height < 1 || cs.visibility === 'hidden') continue;
    out.push(el);
  }
  if (window.__vlm) window.__vlm.targets = out;
  return out.map(describe);
}"""

CLICK_TARGET = "i => (window.__vlm && window.__vlm.targets[i]) || null"

# Fills form j with plausible values by input type; input/change events let site handlers run.
FILL = r"""j => {
  const f = document.forms[j]; if (!f) return null;
  const fire = el => { for (const t of ['input', 'change'])
    el.dispatchEvent(new Event(t, {bubbles: true})); };
  const byType = {email: 'test@example.com', tel: '+15551234567', url: 'https://example.com/',
    date: '2024-05-17', 'datetime-local': '2024-05-17T12:00', time: '12:00', month: '2024-05',
    week: '2024-W20', color: '#336699', password: 'Passw0rd!23', search: 'test'};
  const radios = new Set(); let n = 0;
  for (const el of f.querySelectorAll('input,select,textarea')) {
    if (el.disabled || el.readOnly) continue;
    const tag = el.tagName.toLowerCase(), type = (el.getAttribute('type') || 'text').toLowerCase();
    if (tag === 'select') {
      const o = [...el.options].find(o => o.value && !o.disabled); if (!o) continue;
      el.value = o.value;
    } else if (tag === 'textarea') { el.value = 'Hello, this is a test message.';
    } else if (['hidden', 'submit', 'button', 'reset', 'image', 'file', 'range'].includes(type)) {
      continue;
    } else if (type === 'checkbox') { el.checked = true;
    } else if (type === 'radio') { if (radios.has(el.name)) continue; radios.add(el.name);
      el.checked = true;
    } else if (type === 'number') { const lo = parseFloat(el.min), hi = parseFloat(el.max);
      el.value = String(isNaN(lo) ? (isNaN(hi) ? 1 : Math.min(1, hi)) : lo);
    } else {
      const name = (el.name || el.id || '').toLowerCase();
      let v = byType[type] || (/mail/.test(name) ? 'test@example.com' : /name/.test(name)
        ? 'Alex Example' : /phone|tel/.test(name) ? '+15551234567' : 'Test input');
      if (el.maxLength > 0) v = v.slice(0, el.maxLength);
      el.value = v;
    }
    fire(el); n++;
  }
  const btn = f.querySelector('button:not([type]),button[type=submit],input[type=submit]');
  const cls = typeof f.className === 'string' ? f.className.trim().split(/\s+/)[0] : '';
  const label = btn ? (btn.innerText || btn.value || '').trim().replace(/\s+/g, ' ')
    .slice(0, 40) : '';
  const name = 'form' + (f.id ? '#' + f.id : cls ? '.' + cls : '');
  return {fields: n, target: label ? name + " '" + label + "'" : name};
}"""

# Submits form j on the next task (so this evaluate returns before any navigation starts);
# returns whether the filled form is valid.
SUBMIT = r"""j => {
  const f = document.forms[j]; if (!f) return false;
  const btn = f.querySelector('button:not([type]),button[type=submit],input[type=submit]');
  const valid = HTMLFormElement.prototype.checkValidity.call(f);
  setTimeout(() => { try { HTMLFormElement.prototype.requestSubmit.call(f, btn || undefined); }
    catch (e) { HTMLFormElement.prototype.submit.call(f); } }, 0);
  return valid;
}"""


def site_path(origin: str, url: str) -> str | None:
    """The path of `url` on the site server ("/about.html"), or None if it is elsewhere."""
    if url != origin and not url.startswith(origin + "/"):
        return None
    return urlsplit(url).path or "/"


# ---------------------------------------------------------------- processes
def browser_pid(marker: str) -> int | None:
    """The browser process launched with `--vlmagent-instance=<marker>` (not its children)."""
    flag = f"--vlmagent-instance={marker}".encode()
    for entry in os.listdir("/proc") if marker else ():
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if flag in argv and not any(a.startswith(b"--type=") for a in argv):
            return int(entry)
    return None


def kill(pid: int | None) -> None:
    try:
        if pid:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def kill_renderers(browser: int) -> None:
    """SIGKILL every renderer below `browser` (one site runs at a time, so all are its pages)."""
    kids: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:  # field 4 of /proc/PID/stat is the parent; the name before it may hold spaces
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    todo = list(kids.get(browser, []))
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            if b"--type=renderer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                kill(pid)
        except OSError:
            pass


class Watchdog:
    """Bounds Playwright calls that have no timeout of their own (evaluate, resize, close).

    When a guarded call overruns, the renderers are killed (the page crashes and the call
    fails); if the call still hangs, the browser itself is killed and relaunched by its owner.
    """

    def __init__(self, pid: Callable[[], int | None]) -> None:
        self._pid = pid
        self.fired = False  # set when a guard expired; the owner resets it per page

    @contextmanager
    def guard(self, seconds: float) -> Iterator[None]:
        done = threading.Event()

        def watch() -> None:
            if done.wait(seconds):
                return
            self.fired = True
            browser = self._pid()
            if browser:
                kill_renderers(browser)
                if not done.wait(seconds + 2.0):
                    kill(browser)

        threading.Thread(target=watch, daemon=True).start()
        try:
            yield
        finally:
            done.set()
