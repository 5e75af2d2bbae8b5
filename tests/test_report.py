"""The HTML report, opened in the real Chromium: what a person sees (metrics, a sortable table,
thumbnails, the reasons a site lost points), with nothing a site wrote able to run."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vlmagent.config import BrowserConfig
from vlmagent.scoring.report import batch_metrics, reasons, write_report
from vlmagent.scoring.runner import Summary
from vlmagent.web.browser import find_chromium

STAGES = ["structure", "execution", "aesthetics"]


def stage(name, score, passed, **details):
    return {"name": name, "score": score, "passed": passed, "details": details, "seconds": 0.1}


def page(path, shots):
    return {"path": path, "screenshot_desktop": shots[0], "screenshot_mobile": shots[1]}


def lines(tmp: Path) -> list[dict]:
    shots = tmp / "shots"
    shots.mkdir()
    for i, colour in enumerate(["#3b7ddd", "#dd3b3b"]):
        Image.new("RGB", (128, 80), colour).save(shots / f"{i}d.png")
        Image.new("RGB", (40, 80), colour).save(shots / f"{i}m.png")
    good = {"site": "good", "reward": 0.9, "seconds": 1.0, "error": None, "stages": [
        stage("structure", 1.0, True, checks={"index_present": True}),
        stage("execution", 1.0, True, gate={"index_renders": True},
              checks={"loads": 1.0}, pages=[page("/index.html", ("shots/0d.png", "shots/0m.png"))]),
        stage("aesthetics", 0.8, True, aesthetic_score=4.0, measures=[
            {"name": "text_contrast", "value": 2.1, "band": [4.5, None], "score": 0.4,
             "page": "/about.html", "viewport": "desktop", "why": "grey on white"}])]}
    flawed = {"site": "<b>flawed</b>", "reward": 0.5, "seconds": 2.0, "error": None, "stages": [
        stage("structure", 1.0, True, checks={"index_present": True}),
        stage("execution", 0.4, True, gate={"index_renders": True},
              checks={"loads": 1.0, "links_ok": 0.5}, problems=["<script>alert(1)</script>"],
              mirrored_requests=["GET https://unpkg.com/react@18 -> react@18.3.1"],
              blocked_requests=["GET https://cdn.example.com/x.js"],
              left_site=["POST https://forms.example.org/f/x"],
              pages=[page("/index.html", ("shots/1d.png", "shots/1m.png"))]),
        stage("aesthetics", 0.4, False, aesthetic_score=2.0, measures=[])]}
    broken = {"site": "broken", "reward": 0.1, "seconds": 0.5, "error": None, "stages": [
        stage("structure", 0.3, False, checks={"index_present": False},
              failures=[{"file": "index.html", "problem": "missing: about.html"}])]}
    failed_build = {"site": "vite", "reward": 0.3, "seconds": 0.4, "error": None, "stages": [
        stage("structure", 1.0, True, failures=[], ignored_files=[
            {"file": "vite.config.js", "reason": "locked scaffold file"}]),
        stage("build", 0.0, False, problem="build failed (exit code 1)",
              log="error during build:\nsrc/App.tsx:2:27: ERROR: Unexpected closing tag")]}
    return [good, flawed, broken, failed_build]


def summary(ls):
    return Summary(sites=len(ls), scored=len(ls), resumed=0, duplicates=0, errors=[],
                   mean_reward=sum(d["reward"] for d in ls) / len(ls),
                   stage_pass={"structure": (2, 3), "execution": (2, 2), "aesthetics": (1, 2)},
                   slowest=[], seconds=3.5)


def test_batch_metrics_and_reasons(tmp_path):
    ls = lines(tmp_path)
    m = batch_metrics(ls)
    assert m["functional_success_rate"] == pytest.approx(2 / 4)
    assert m["valid_render_ratio"] == pytest.approx(2 / 4)
    assert m["aesthetic_score"] == pytest.approx(3.0) and m["aesthetic_n"] == 2
    why = reasons(ls[0], STAGES)
    assert why == ["aesthetics: text_contrast 2.1 (band >= 4.5), score 0.40 on desktop "
                   "/about.html: grey on white"]
    broken = reasons(ls[2], STAGES)
    assert "structure: check index_present" in broken
    assert "structure: index.html: missing: about.html" in broken
    assert "execution: not run (an earlier stage failed its gate)" in broken
    assert "execution: check links_ok scored 0.50" in reasons(ls[1], STAGES)
    assert reasons(ls[3], ["structure", "build", "execution"]) == [
        "structure: vite.config.js: ignored (locked scaffold file)",
        "build: build failed (exit code 1)",
        "build: log:\nerror during build:\nsrc/App.tsx:2:27: ERROR: Unexpected closing tag",
        "execution: not run (an earlier stage failed its gate)"]


@pytest.mark.browser
def test_a_person_sees_metrics_sorts_the_table_and_reads_why(tmp_path):
    from playwright.sync_api import sync_playwright

    ls = lines(tmp_path)
    out = tmp_path / "report.html"
    write_report(ls, out, summary(ls), results_dir=tmp_path)
    html = out.read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "'unsafe-inline'" not in html.split("script-src")[1].split('"')[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(BrowserConfig()),
                                     args=["--no-sandbox"])
        pg = browser.new_page()
        problems: list[str] = []
        pg.on("pageerror", lambda e: problems.append(str(e)))
        pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        pg.goto(out.as_uri())
        metric = {k: pg.inner_text(f'[data-metric="{k}"] b') for k in
                  ("functional_success_rate", "valid_render_ratio", "aesthetic_score")}
        assert metric == {"functional_success_rate": "50.0%", "valid_render_ratio": "50.0%",
                          "aesthetic_score": "3.00"}

        def column(i):
            return pg.eval_on_selector_all("#sites tbody tr",
                                           f"rs => rs.map(r => r.cells[{i}].innerText)")

        assert column(0) == ["good", "<b>flawed</b>", "vite", "broken"]  # by reward, as text
        pg.click('th[data-k="reward"]')
        assert column(0) == ["broken", "vite", "<b>flawed</b>", "good"]
        pg.click('th[data-k="reward"]')
        assert column(0) == ["good", "<b>flawed</b>", "vite", "broken"]
        pg.click('th[data-k="site"]')
        assert column(0) == ["<b>flawed</b>", "broken", "good", "vite"]
        widths = pg.eval_on_selector_all(".thumb img", "is => is.map(i => i.naturalWidth)")
        assert widths == [128, 40, 128, 40]  # desktop and mobile thumbnails of two sites
        card = pg.inner_text("#site-broken")
        assert "missing: about.html" in card and "execution: not run" in card
        assert "grey on white" in pg.inner_text("#site-good")
        assert "src/App.tsx:2:27: ERROR" in pg.inner_text("#site-vite")
        pg.click('[id="site-<b>flawed</b>"] details summary')  # the per-site network list
        net = pg.inner_text('[id="site-<b>flawed</b>"] details')
        assert "other hosts: 1 mirrored, 1 blocked, left the site 1 times" in net
        assert "left POST https://forms.example.org/f/x" in net
        assert "mirrored GET https://unpkg.com/react@18 -> react@18.3.1" in net
        assert "blocked GET https://cdn.example.com/x.js" in net
        assert "other hosts" not in pg.inner_text("#site-good")
        assert pg.evaluate("typeof alert") == "function" and problems == []
        browser.close()
