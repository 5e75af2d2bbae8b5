"""Stage 2, execution: drive the site in the sandboxed browser and grade what happened.

The browser (browser.py) observes; this module only judges. Checks, each in [0, 1]:
  loads        pages whose main document came back with HTTP < 400
  renders      pages whose desktop screenshot is not blank
  no_exceptions, console_clean   pages without uncaught exceptions / console errors
  requests_ok  per page 1 - (failed requests + HTTP >= 400 sub-resources) / FAILED_TO_ZERO, at
               least 0: one missing image costs a quarter of it, four or more all of it
  sandbox_clean  1 when the site never tried to reach outside its folder (CDN files the offline
               mirror answers do not count), else 0
  links_ok     internal links that resolve
  interactive  clicks and form submissions that visibly did something (absent if none exist)
  mobile       pages without horizontal overflow at the mobile width and with a viewport meta tag
  no_loops     pages that do not keep navigating by themselves (reload / redirect loops)
  no_spam      1 unless the site opened more dialogs and popups than one per interaction + 1
score = weighted mean of the checks that apply (loads and renders count double). The stage
passes when the index page loads, renders, raises no uncaught exception (configurable), is a
finished file (not cut off or a generation loop, as structure found), is not a navigation loop,
does not spam dialogs or popups (more than SPAM_ALLOWANCE beyond one per interaction), and
score >= pass_threshold.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from vlmagent.config import ExecutionConfig
from vlmagent.rewards.cascade import SiteContext
from vlmagent.types import PageVisit, SiteVisit, StageScore

MAX_LISTED = 20
LOOP_NAVIGATIONS = 3  # page-initiated navigations on one page that mean a loop (1 redirect is fine)
SPAM_ALLOWANCE = 10  # dialogs + popups beyond one per interaction that make a site unusable
FAILED_TO_ZERO = 4  # failed sub-requests on one page that take its requests_ok to 0
# What a person sees first counts double: among sites that fail the gate, one that shows its
# content (and throws, or asks a CDN the mirror lacks) ranks above one that shows nothing.
CHECK_WEIGHTS = {"loads": 2.0, "renders": 2.0}


def _loops(p: PageVisit) -> bool:
    return int(p.dom.get("navigations", 0)) >= LOOP_NAVIGATIONS


def _frac(pages: list[PageVisit], ok: Callable[[PageVisit], bool]) -> float:
    return sum(1 for p in pages if ok(p)) / len(pages) if pages else 0.0


def grade_visit(visit: SiteVisit, cfg: ExecutionConfig, unfinished: Sequence[str] = ()
                ) -> tuple[float, bool, dict[str, Any]]:
    """Score, pass flag and human-readable details for one SiteVisit. Pure. `unfinished`: why
    the index file is not a finished page (structure: cut off, a generation loop)."""
    pages = visit.pages
    checks: dict[str, float] = {
        "loads": _frac(pages, lambda p: p.status is not None and p.status < 400
                       and not p.load_error),
        "renders": _frac(pages, lambda p: p.blank is False),
        "no_exceptions": _frac(pages, lambda p: not p.page_errors and not p.crashed),
        "console_clean": _frac(pages, lambda p: not p.console_errors),
        "requests_ok": sum(max(0.0, 1.0 - (len(p.failed_requests) + len(p.http_errors))
                               / FAILED_TO_ZERO) for p in pages) / len(pages) if pages else 0.0,
        "sandbox_clean": 0.0 if visit.blocked_requests else 1.0,
    }
    n_links = sum(len(p.internal_links) for p in pages)
    checks["links_ok"] = 1.0 - len(visit.broken_links) / n_links if n_links else 1.0
    checks["links_ok"] = max(0.0, checks["links_ok"])
    acts = [a for p in pages for a in p.interactions]
    if acts:
        checks["interactive"] = sum(a.changed for a in acts) / len(acts)
    checks["mobile"] = _frac(pages, lambda p: (p.mobile_overflow_px or 0) <= 1
                             and bool(p.viewport_meta))
    checks["no_loops"] = _frac(pages, lambda p: not _loops(p))
    effects = visit.dialogs + visit.popups
    checks["no_spam"] = 1.0 if effects <= len(acts) + 1 else 0.0
    w = {k: CHECK_WEIGHTS.get(k, 1.0) for k in checks}
    score = sum(w[k] * v for k, v in checks.items()) / sum(w.values()) if pages else 0.0

    index = pages[0] if pages else None
    gate = {
        "index_loads": bool(index and index.status is not None and index.status < 400
                            and not index.load_error),
        "index_renders": bool(index and index.blank is False),
        "index_no_exceptions": bool(index and not index.crashed
                                    and (not index.page_errors or not cfg.fail_on_page_errors)),
        "index_not_looping": bool(index and not _loops(index)),
        "index_finished": not unfinished,
        "no_dialog_or_popup_spam": effects <= len(acts) + SPAM_ALLOWANCE,
        "score_above_threshold": score >= cfg.pass_threshold,
    }
    passed = all(gate.values()) and visit.error is None
    problems = [f"/index.html: {u}" for u in unfinished] + _problems(visit)
    details: dict[str, Any] = {
        "checks": {k: round(v, 4) for k, v in checks.items()},
        "gate": gate,
        "pages": [_page_summary(p) for p in pages],
        "problems": problems[:MAX_LISTED * 3],
        "n_problems": len(problems),
        "blocked_requests": visit.blocked_requests[:MAX_LISTED],
        "mirrored_requests": visit.mirrored_requests[:MAX_LISTED],
        "left_site": visit.left_site[:MAX_LISTED],
        "broken_links": visit.broken_links[:MAX_LISTED],
        "missing_files": _missing(pages)[:MAX_LISTED],
        "interactions": {"total": len(acts), "changed": sum(a.changed for a in acts)},
        "dialogs": visit.dialogs,
        "popups": visit.popups,
        "browser_seconds": round(visit.seconds, 3),
    }
    if visit.error:
        details["error"] = visit.error
    return score, passed, details


def _missing(pages: list[PageVisit]) -> list[str]:
    """The site's own files the browser asked for and did not get ("/img/team.jpg"), sorted."""
    return sorted({e.split(" ", 1)[1] for p in pages for e in p.http_errors
                   if e.startswith("404 ")})


def _page_summary(p: PageVisit) -> dict[str, Any]:
    d = asdict(p)
    d.pop("measures")  # raw DOM facts for the aesthetics stage, which reports its own findings
    for k in ("console_errors", "page_errors", "failed_requests", "http_errors",
              "internal_links"):
        d[k] = d[k][:MAX_LISTED]
    d["interactions"] = d["interactions"][:MAX_LISTED]
    return d


def _problems(visit: SiteVisit) -> list[str]:
    """One line per thing a person would want fixed, prefixed with the page it happened on."""
    out: list[str] = []
    if visit.error:
        out.append(f"site: {visit.error}")
    for p in visit.pages:
        if p.load_error or (p.status or 0) >= 400 or p.status is None:
            out.append(f"{p.path}: did not load ({p.load_error or p.status})")
        if p.crashed:
            out.append(f"{p.path}: renderer crashed")
        if p.timed_out:
            out.append(f"{p.path}: ran out of time")
        if p.blank:
            out.append(f"{p.path}: blank render")
        out += [f"{p.path}: uncaught {e[:300]}" for e in p.page_errors]
        out += [f"{p.path}: console error {e[:300]}" for e in p.console_errors]
        out += [f"{p.path}: failed request {e[:300]}" for e in p.failed_requests]
        out += [f"{p.path}: HTTP {e[:300]}" for e in p.http_errors]
        if (p.mobile_overflow_px or 0) > 1:
            out.append(f"{p.path}: overflows {p.mobile_overflow_px}px horizontally on mobile")
        if _loops(p):
            out.append(f"{p.path}: keeps navigating by itself "
                       f"({p.dom.get('navigations')} navigations, cut off)")
        if p.viewport_meta is False:
            out.append(f"{p.path}: no viewport meta tag")
        out += [f"{p.path}: {a.kind} on {a.target[:120]} changed nothing"
                for a in p.interactions if not a.changed]
    if visit.dialogs or visit.popups:
        out.append(f"site: opened {visit.dialogs} dialogs and {visit.popups} popups")
    out += [f"blocked: {r[:300]}" for r in visit.blocked_requests]
    out += [f"broken link: {b[:300]}" for b in visit.broken_links]
    return out


class ExecutionStage:
    """Wraps a Browser (one per process, owned by the caller) as a cascade stage."""

    name = "execution"

    def __init__(self, browser: Any, cfg: ExecutionConfig, measure: str | None = None):
        self.browser = browser
        self.cfg = cfg
        self.measure = measure  # the aesthetics stage's in-page script, run during the visit

    def __call__(self, site: SiteContext, deadline: float) -> StageScore:
        shots = site.artifacts if self.cfg.screenshots else None
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
        visit = self.browser.visit_site(site.root, shots, deadline=deadline,
                                        measure=self.measure)
        for p in visit.pages:
            p.screenshot_desktop = site.link(p.screenshot_desktop)
            p.screenshot_mobile = site.link(p.screenshot_mobile)
        site.visit = visit
        score, passed, details = grade_visit(visit, self.cfg, site.unfinished)
        return StageScore(self.name, score, passed, details)
