"""Stage 3, vision aesthetics (WebGen-R1's last gate), weight-free by default.

Every visited page (index first, up to max_pages) is measured at the desktop and the mobile
viewport: pixels of its full-page screenshot (reused from the execution stage when it wrote
them) and DOM facts from the in-page script web/js/measure.js (computed styles, layout boxes).
Each measure maps to [0, 1] by its distance to a good band (SPECS): appeal peaks at moderate
complexity, so "more" is never better. Scores of one measure are averaged over pages and
viewports; measures are combined by a weighted geometric mean (non-compensatory: unreadable text
is not bought back by nice colours), floored per measure at FLOOR. aesthetic_score = 5 * stage
score.

A judge (judges.py) may replace the metric score by a VLM's 0-5 rating; if it fails, the
failure is recorded in details["judge"] and the metric score stands.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmagent.config import AestheticsConfig, BrowserConfig
from vlmagent.rewards import aesthetics_measures as m
from vlmagent.rewards.cascade import SiteContext
from vlmagent.rewards.judges import Evidence, Shot, build_judge
from vlmagent.types import StageScore
from vlmagent.web.js import load as load_js

FLOOR = 0.05  # a measure at 0 costs like 0.05 in the geometric mean, so one zero is not fatal


@dataclass(frozen=True)
class Spec:
    band: tuple[float, float]  # the good band [lo, hi]; score 1 inside
    below: float  # distance below lo at which the score reaches 0
    above: float  # distance above hi at which the score reaches 0
    weight: float  # severity in the geometric mean
    source: str


SPECS: dict[str, Spec] = {
    # Aalto Interface Metrics "fair" bands (Oulasvirta et al. 2018 / Miniukovich & De Angeli
    # 2015, top-500 sites); 0 at grey and at twice the band top (~"extremely colourful" in HS).
    "colourfulness": Spec((26.0, 54.0), 26.0, 54.0, 1.0, "Hasler-Suesstrunk, Aalto fair band"),
    "edge_density": Spec((0.030, 0.049), 0.030, 0.049, 1.0, "Canny edge share, Aalto fair band"),
    # WCAG 2.x 1.4.3: every text element must reach AA; the value is the passing share.
    "text_contrast": Spec((1.0, 1.0), 1.0, 1.0, 3.0, "WCAG 2 AA 4.5:1 (3:1 large)"),
    # Text on text is always a defect; 1% slack for rounding, nothing left at 5%.
    "text_overlap": Spec((0.0, 0.01), 1.0, 0.04, 3.0, "text boxes on other text"),
    # Ngo et al. 2003 balance; a centred or symmetric first screen scores about 0.9 or more.
    "balance": Spec((0.8, 1.0), 0.8, 1.0, 1.0, "Ngo balance (centre-of-mass form)"),
    # Fewer distinct block edges per block: grid quality (Aalto "alignment", Ngo alignment).
    "alignment": Spec((0.0, 0.35), 1.0, 0.65, 1.0, "distinct edges per block"),
    # Moderate white space: neither cramped (Ngo density) nor empty.
    "whitespace": Spec((0.45, 0.85), 0.45, 0.15, 1.0, "share of the page without content"),
    # Bringhurst: 45-75 characters per line is comfortable; 0 at 150 (a full-width page).
    "line_length": Spec((45.0, 75.0), 45.0, 75.0, 2.0, "characters per line, Bringhurst"),
    # Typography practice: one to three families.
    "typefaces": Spec((1.0, 3.0), 1.0, 3.0, 1.0, "font families carrying >= 2% of text"),
    # Any sideways scrolling on a phone is a defect (Google mobile-friendly test).
    "mobile_overflow": Spec((0.0, 0.005), 1.0, 0.1, 2.0, "horizontal overflow / screen width"),
    "viewport_meta": Spec((1.0, 1.0), 1.0, 1.0, 1.0, "meta viewport width=device-width"),
    # A site reads as one when every page reuses the index's colours and fonts (a page's own
    # accent may add ~10%) and keeps its navigation (one link in five may differ).
    "palette_consistency": Spec((0.9, 1.0), 0.9, 1.0, 2.0, "colours shared with the index"),
    "font_consistency": Spec((0.9, 1.0), 0.9, 1.0, 1.0, "font families shared with index"),
    "nav_consistency": Spec((0.8, 1.0), 0.8, 1.0, 1.0, "navigation links shared with index"),
}


def band_score(v: float, lo: float, hi: float, below: float, above: float) -> float:
    """1 inside [lo, hi], falling linearly to 0 at `below` under lo / `above` over hi."""
    if v < lo:
        return max(0.0, 1.0 - (lo - v) / below) if below > 0 else 0.0
    if v > hi:
        return max(0.0, 1.0 - (v - hi) / above) if above > 0 else 0.0
    return 1.0


def bands(cfg: AestheticsConfig) -> dict[str, tuple[float, float]]:
    """Default bands with the config's overrides; unknown names and bad bands are errors."""
    out = {k: s.band for k, s in SPECS.items()}
    for k, v in cfg.bands.items():
        if k not in SPECS:
            raise ValueError(f"reward.aesthetics.bands: unknown measure {k!r} "
                             f"(valid: {', '.join(SPECS)})")
        if len(v) != 2 or not v[0] <= v[1]:
            raise ValueError(f"reward.aesthetics.bands.{k}: need [lo, hi] with lo <= hi")
        out[k] = (float(v[0]), float(v[1]))
    return out


def measure_page(dom: dict, png: bytes | None, viewport: str,
                 max_height: float) -> dict[str, tuple[float, str]]:
    """Raw (value, why) of every measure that applies to one page at one viewport."""
    rgb = m.decode_png(png) if png else None
    out: dict[str, tuple[float, str] | None] = {}
    if rgb is not None and rgb.size:
        c = m.colourfulness(rgb)
        out["colourfulness"] = (c, f"colourfulness {c:.1f} (Hasler-Suesstrunk)")
        e = m.edge_density(rgb)
        out["edge_density"] = (e, f"{100 * e:.1f}% of pixels are edges")
    out["text_contrast"] = m.text_contrast(dom, rgb)
    out["text_overlap"] = m.text_overlap(dom)
    out["balance"] = m.balance(dom)
    out["alignment"] = m.alignment(dom)
    out["whitespace"] = m.whitespace(dom, max_height)
    if viewport == "desktop":  # phones fix the column; fonts are the same at both widths
        out["line_length"] = m.line_length(dom)
        out["typefaces"] = m.typefaces(dom)
    else:
        out["mobile_overflow"] = m.mobile_overflow(dom)
        vm = bool(dom["viewport_meta"])
        out["viewport_meta"] = (float(vm), "has a viewport meta tag" if vm else
                                "no <meta name=viewport content=width=device-width>: phones "
                                "show a shrunken desktop page")
    return {k: v for k, v in out.items() if v is not None}


def _entry(name: str, value: float, why: str, band: tuple[float, float], page: str | None,
           viewport: str | None) -> dict[str, Any]:
    s = SPECS[name]
    score = band_score(value, band[0], band[1], s.below, s.above)
    return {"name": name, "value": round(float(value), 6), "band": [band[0], band[1]],
            "score": round(score, 6), "page": page, "viewport": viewport, "why": why}


def combine(measures: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """Stage score in [0, 1] and the per-measure mean scores (weighted geometric mean)."""
    per: dict[str, list[float]] = {}
    for e in measures:
        per.setdefault(e["name"], []).append(e["score"])
    means = {k: sum(v) / len(v) for k, v in per.items()}
    if not means:
        return 0.0, {}
    w = {k: SPECS[k].weight for k in means}
    log = sum(w[k] * math.log(max(FLOOR, v)) for k, v in means.items()) / sum(w.values())
    return round(math.exp(log), 9), {k: round(v, 6) for k, v in means.items()}


def score_pages(recs: list[dict[str, Any]], cfg: AestheticsConfig,
                max_height: float) -> tuple[float, list[dict[str, Any]], int]:
    """(stage score, measures, pages measured) from Browser.inspect_pages records. Pure."""
    band = bands(cfg)
    measures: list[dict[str, Any]] = []
    doms: list[tuple[str, dict]] = []
    for r in recs:
        if r.get("desktop") is None:
            continue
        doms.append((r["path"], r["desktop"]))
        for vp in ("desktop", "mobile"):
            if r.get(vp) is None:
                continue
            for name, (v, why) in measure_page(r[vp], r.get(f"png_{vp}"), vp,
                                               max_height).items():
                measures.append(_entry(name, v, why, band[name], r["path"], vp))
    for name, page, v, why in m.consistency(doms):
        measures.append(_entry(name, v, why, band[name], page, None))
    score, _ = combine(measures)
    return (score if doms else 0.0), measures, len(doms)


class AestheticsStage:
    """Measures what execution visited (its screenshots reused when on disk) and asks a judge."""

    name = "aesthetics"

    def __init__(self, browser: Any, cfg: AestheticsConfig,
                 browser_cfg: BrowserConfig | None = None, judge: Any = None) -> None:
        bands(cfg)  # fail at construction on a bad band, not on the first site
        self.browser, self.cfg = browser, cfg
        bc = browser_cfg or BrowserConfig()
        self.max_height = float(bc.max_screenshot_height)
        self.screens = {"desktop": bc.viewport_height, "mobile": bc.mobile_height}
        self.judge = judge or build_judge(cfg)

    def _pages(self, site: SiteContext, deadline: float) -> list[Any]:
        visit = site.visit
        if visit is None:  # run without the execution stage: crawl once to find the pages
            visit = site.visit = self.browser.visit_site(site.root, None, deadline=deadline)
        ok = [p for p in visit.pages if p.status is not None and p.status < 400
              and not p.load_error and p.blank is False]
        return ok[: max(1, self.cfg.max_pages)]

    def _reuse(self, site: SiteContext, rel: str | None) -> bytes | None:
        if not rel:
            return None
        p = Path(rel)
        if not p.is_absolute() and site.link_base is not None:
            p = site.link_base / p
        try:
            return p.read_bytes()
        except OSError:
            return None

    def __call__(self, site: SiteContext, deadline: float) -> StageScore:
        pages = self._pages(site, deadline)
        if not pages:
            return StageScore(self.name, 0.0, False, {
                "aesthetic_score": 0.0, "measures": [], "pages": 0,
                "error": "no visited page loaded and rendered"})
        shots = {(p.path, vp): self._reuse(site, getattr(p, f"screenshot_{vp}"))
                 for p in pages for vp in ("desktop", "mobile")}
        need = any(v is None for v in shots.values())
        if not need and all(p.measures.get(vp) is not None for p in pages
                            for vp in ("desktop", "mobile")):
            # execution ran our script on every page during its visit: no second load
            recs = [{"path": p.path, "desktop": p.measures["desktop"], "error": None,
                     "mobile": p.measures["mobile"], "png_desktop": None, "png_mobile": None}
                    for p in pages]
        else:
            recs = self.browser.inspect_pages(site.root, [p.path for p in pages],
                                              load_js("measure"), shoot=need, deadline=deadline)
        for r in recs:
            for vp in ("desktop", "mobile"):
                r[f"png_{vp}"] = r.get(f"png_{vp}") or shots.get((r["path"], vp))
        score, measures, n = score_pages(recs, self.cfg, self.max_height)
        metric = round(5.0 * score, 6)
        ev = Evidence([Shot(r["path"], vp, r[f"png_{vp}"]) for r in recs
                       for vp in ("desktop", "mobile") if r.get(f"png_{vp}")],
                      metric if n else None, self.screens)
        details: dict[str, Any] = {"aesthetic_score": metric, "measures": measures, "pages": n}
        if self.judge.name != "metrics":
            verdict = self.judge(ev, deadline)
            details["judge"] = verdict.to_dict()
            details["metrics_score"] = metric
            if verdict.score is not None:
                details["aesthetic_score"] = round(float(verdict.score), 6)
                score = verdict.score / 5.0
            else:
                details["judge"]["fallback"] = "metrics"
        else:
            details["judge"] = {"name": "metrics"}
        errors = [f"{r['path']}: {r['error']}" for r in recs if r.get("error")]
        if errors:
            details["errors"] = errors[:20]
        worst = sorted((e for e in measures if e["score"] < 1.0), key=lambda e: e["score"])
        details["out_of_band"] = [f"{e['page'] or 'site'} {e['viewport'] or ''} {e['name']}: "
                                  f"{e['why']}".replace("  ", " ") for e in worst[:10]]
        passed = n > 0 and score >= self.cfg.pass_threshold
        return StageScore(self.name, score, passed, details)
