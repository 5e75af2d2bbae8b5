"""Hand-written real-world websites (data/realworld) scored by the full cascade, each checked
against what a person expects of it (data/realworld/expected.json): the index page loads, its
content shows (with a given text), the CDN libraries it uses come from the offline mirror, only
what cannot be served stays blocked, exactly the missing site files are reported, hand-picked
pairs are ordered by reward, and the quality bands (good / flawed / broken) are separated.

The folder is scored once per module (`workers=2`); every check is its own test, so a run lists
each unmet expectation by site."""
from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from vlmagent.config import Config
from vlmagent.scoring import sites as scoring

ROOT = Path(__file__).resolve().parents[1] / "data" / "realworld"
EXPECTED = json.loads((ROOT / "expected.json").read_text())
SITES: dict[str, dict[str, Any]] = EXPECTED["sites"]
NAMES = sorted(SITES)
ORDERINGS: list[dict[str, str]] = EXPECTED["orderings"]
CATEGORIES = {"cdn", "form", "missing_asset", "json", "degenerate", "multi"}
QUALITIES = ("good", "flawed", "broken")
MISSING_STATUS = {404, 410}  # an http_errors entry with these codes means "the file is not there"


# ---------------------------------------------------------------- helpers
class _StaticText(HTMLParser):
    """Visible text of an HTML file before any script runs (script/style/template skipped)."""

    SKIP = {"script", "style", "template", "noscript", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if text and not self._skip:
            self.parts.append(text)


def static_text(name: str) -> str:
    """The index page's text as the HTML file has it, one text node a line (an upper estimate
    of innerText before scripts run: innerText also drops hidden elements)."""
    p = _StaticText()
    p.feed((ROOT / name / "index.html").read_text(encoding="utf-8"))
    p.close()
    return "\n".join(p.parts)


def stage(line: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in line["stages"] if s["name"] == name), None)


def execution(line: dict[str, Any]) -> dict[str, Any] | None:
    """The execution stage's details; None for a broken page the structure gate stopped (that is
    its expected outcome, asserted here); a failure saying why the stage never ran otherwise."""
    ex = stage(line, "execution")
    if ex is not None:
        return ex["details"]
    ran = ", ".join(f"{s['name']} {'passed' if s['passed'] else 'FAILED'}" for s in line["stages"])
    why = f"{line['site']}: the execution stage did not run ({ran or 'no stages'}"
    why += f"; error {line['error']})" if line.get("error") else ")"
    st = stage(line, "structure")
    if SITES[line["site"]]["quality"] == "broken" and st is not None and not st["passed"]:
        return None  # the cascade stops a broken page at the structure gate: nothing to look at
    pytest.fail(why)


def index_page(line: dict[str, Any]) -> dict[str, Any] | None:
    if (details := execution(line)) is None:
        return None
    pages = details["pages"]
    assert pages, f"{line['site']}: no page visited"
    assert pages[0]["path"] in ("/index.html", "/"), pages[0]["path"]
    return pages[0]


def brief(details: dict[str, Any]) -> str:
    return f"gate {details.get('gate')}; problems {details.get('problems', [])[:8]}"


def reported_missing(details: dict[str, Any]) -> set[str]:
    """Site paths reported as not there on any visited page: 404/410 responses, failed requests."""
    out: set[str] = set()
    for p in details["pages"]:
        for e in p["http_errors"]:  # "404 /img/team.jpg"
            code, _, path = e.partition(" ")
            if code.isdigit() and int(code) in MISSING_STATUS:
                out.add(path.split("?", 1)[0])
        for e in p["failed_requests"]:  # "/img/team.jpg net::ERR_..."
            out.add(e.split(" ", 1)[0].split("?", 1)[0])
    return out


def mirrored_packages(entries: list[str]) -> set[str]:
    """npm names from entries like
    "GET https://unpkg.com/react@18/umd/react.production.min.js -> react@18.3.1", where the
    answer may name several packages ("a@1, b@2") and add notes in parentheses."""
    names = set()
    for e in entries:
        answer = e.rsplit(" -> ", 1)[-1].split(" (", 1)[0]
        for spec in answer.split(", "):
            at = spec.strip().rfind("@")
            names.add(spec.strip()[:at] if at > 0 else spec.strip())
    return names


# ---------------------------------------------------------------- the fixture
@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("realworld") / "results.jsonl"
    summary = scoring.score([ROOT], out, Config(), workers=2, progress=False)
    return {"summary": summary, "by": {d["site"]: d for d in summary.lines}}


def line_of(scored: dict[str, Any], name: str) -> dict[str, Any]:
    by = scored["by"]
    assert name in by, f"{name} has no result line"
    return by[name]


# ---------------------------------------------------------------- the fixtures themselves
def test_expectations_cover_the_sites_and_are_well_formed():
    dirs = {p.name for p in ROOT.iterdir() if p.is_dir()}
    assert dirs == set(SITES) and len(dirs) >= 32
    keys = {"category", "loads", "renders_content", "mirrored", "blocked", "missing",
            "expect_text", "quality"}
    for name, exp in SITES.items():
        assert keys <= set(exp), name
        assert exp["category"] in CATEGORIES and exp["quality"] in QUALITIES, name
        assert (ROOT / name / "index.html").is_file(), name
        for p in exp["missing"]:  # expected missing files really are missing
            assert p.startswith("/") and not (ROOT / name / p.lstrip("/")).exists(), (name, p)
        if exp["expect_text"]:  # the text is written somewhere in the site's own files
            sources = "\n".join(
                html.unescape(re.sub(r"<[^>]*>", "", f.read_text(encoding="utf-8")))
                .replace("\\'", "'")
                for f in (ROOT / name).rglob("*") if f.suffix in (".html", ".js", ".json"))
            assert exp["expect_text"] in sources, name
        assert exp["renders_content"] or not exp["expect_text"], name
    assert {e["category"] for e in SITES.values()} == CATEGORIES
    assert len(ORDERINGS) >= 10
    for o in ORDERINGS:
        assert o["better"] in SITES and o["worse"] in SITES and o["why"], o
    for f in ROOT.rglob("*"):  # small, and no binaries but the few images that are present
        if f.is_file():
            assert f.suffix in (".html", ".css", ".js", ".json", ".svg", ".png"), f
            assert f.stat().st_size < (20_000 if f.suffix in (".svg", ".png") else 64_000), f
    lines = {n: len((ROOT / n / "index.html").read_text(encoding="utf-8").splitlines())
             for n in SITES}
    assert all(40 <= k <= 250 for k in lines.values()), lines


# ---------------------------------------------------------------- scored
@pytest.mark.browser
def test_every_site_gets_a_line(scored):
    summary = scored["summary"]
    assert not summary.errors, summary.errors
    assert set(scored["by"]) == set(SITES), f"scored in {summary.seconds:.1f}s"


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_loads(scored, name):
    exp, line = SITES[name], line_of(scored, name)
    if (page := index_page(line)) is None:
        return
    ok = page["status"] is not None and page["status"] < 400 and not page["load_error"]
    assert ok == exp["loads"], (
        f"{name}: index status {page['status']}, load_error {page['load_error']}, expected loads="
        f"{exp['loads']}; {brief(execution(line))}")


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_renders_content(scored, name):
    exp, line = SITES[name], line_of(scored, name)
    if (page := index_page(line)) is None:
        return
    shown = page["blank"] is False and page["visible_text_chars"] > 0
    assert shown == exp["renders_content"], (
        f"{name}: blank {page['blank']}, {page['visible_text_chars']} visible chars, expected "
        f"renders_content={exp['renders_content']}; page errors {page['page_errors'][:3]}")
    want = exp["expect_text"]
    if not want:
        return
    text = page.get("visible_text", page.get("text"))
    if isinstance(text, str):  # the details expose the visible text: look for it
        assert want in text, f"{name}: {want!r} not visible"
        return
    # Otherwise from the count: text the HTML already has needs only to be there; text that
    # scripts produce must add at least its own length to what the bare HTML shows.
    static = static_text(name)
    in_html = want in " ".join(static.split())  # "Learn with <span>confidence</span>" counts
    need = len(want) if in_html else len(static) + len(want)
    assert page["visible_text_chars"] >= need, (
        f"{name}: {page['visible_text_chars']} visible chars, need >= {need} for {want!r} "
        f"({'in the HTML' if in_html else 'rendered by script'}; static text "
        f"{len(static)} chars); page errors {page['page_errors'][:3]}; "
        f"blocked {execution(line)['blocked_requests'][:6]}")


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_missing_files_reported(scored, name):
    exp, line = SITES[name], line_of(scored, name)
    if (details := execution(line)) is None:
        return
    got = reported_missing(details)
    assert got == set(exp["missing"]), (
        f"{name}: reported missing {sorted(got)}, expected {sorted(exp['missing'])}; http errors "
        f"{[e for p in details['pages'] for e in p['http_errors']]}")


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_cdn_libraries_mirrored(scored, name):
    exp, line = SITES[name], line_of(scored, name)
    details = execution(line)
    if not exp["mirrored"] or details is None:
        return
    entries = details.get("mirrored_requests")
    assert entries is not None, (
        f"{name}: no mirrored_requests in the execution details; expected {exp['mirrored']} "
        f"served; blocked {details['blocked_requests'][:8]}")
    missing = set(exp["mirrored"]) - mirrored_packages(entries)
    assert not missing, f"{name}: not mirrored {sorted(missing)}; mirrored {entries}"


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_expected_requests_blocked(scored, name):
    exp, line = SITES[name], line_of(scored, name)
    if not exp["blocked"]:
        return
    if (details := execution(line)) is None:
        return
    blocked = details["blocked_requests"]
    absent = [s for s in exp["blocked"] if not any(s in b for b in blocked)]
    assert not absent, f"{name}: expected blocked {absent}; blocked {blocked}"


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_nothing_else_blocked(scored, name):
    exp, line = SITES[name], line_of(scored, name)
    if (details := execution(line)) is None:
        return
    blocked = details["blocked_requests"]
    extra = [b for b in blocked if not any(s in b for s in exp["blocked"])]
    assert not extra, f"{name}: blocked but expected to be served: {extra}"


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_leaving_the_site_is_recorded_not_blocked(scored, name):
    """A form posted to an external service leaves the site: recorded, never followed, and not
    counted as the site reaching out of the sandbox."""
    want, line = SITES[name].get("left_site", []), line_of(scored, name)
    if (details := execution(line)) is None:
        return
    left = details["left_site"]
    assert all(any(s in e for e in left) for s in want) and len(left) == len(want), (name, left)


@pytest.mark.browser
@pytest.mark.parametrize("o", ORDERINGS, ids=[f"{o['better']}>{o['worse']}" for o in ORDERINGS])
def test_ordering(scored, o):
    better, worse = line_of(scored, o["better"]), line_of(scored, o["worse"])
    assert better["reward"] > worse["reward"], (
        f"{o['better']} {better['reward']:.4f} <= {o['worse']} {worse['reward']:.4f}: {o['why']}")


@pytest.mark.browser
def test_quality_bands(scored):
    by = scored["by"]
    rewards = {q: {n: by[n]["reward"] for n in NAMES if SITES[n]["quality"] == q and n in by}
               for q in QUALITIES}
    means = {q: sum(r.values()) / len(r) for q, r in rewards.items()}
    report = (f"means {({q: round(m, 4) for q, m in means.items()})}; lowest good "
              f"{min(rewards['good'].items(), key=lambda kv: kv[1])}; highest broken "
              f"{max(rewards['broken'].items(), key=lambda kv: kv[1])}")
    assert min(rewards["good"].values()) > max(rewards["broken"].values()), report
    assert means["good"] > means["flawed"] > means["broken"], report
