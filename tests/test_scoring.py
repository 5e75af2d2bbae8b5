"""`vlmagent score` end to end: real Chromium, hostile sites, resume after SIGKILL, usage errors."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmagent.cli import main
from vlmagent.config import Config
from vlmagent.scoring.runner import Job, result_line, run_jobs
from vlmagent.web.sitegen import generate_sites, write_hostile_sites

FAST = ["browser.nav_timeout_s=3", "browser.page_budget_s=6", "browser.site_budget_s=12",
        "browser.max_pages=3", "browser.max_clicks_per_page=3"]
REPO = Path(__file__).resolve().parents[1]
N = len(Config().reward.stages)  # gate bands are 1/(N+1) wide


def read(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    sites = tmp / "sites"
    hostile = write_hostile_sites(sites)
    good = generate_sites(tmp / "gen", 2, seed=3)
    for g in good:
        shutil.copytree(g, sites / f"good_{g.name}", symlinks=True)
    xss = sites / "xss_title"
    xss.mkdir()
    (xss / "index.html").write_text(
        "<title><script>alert(1)</script></title><h1>&lt;b&gt;</h1>"
        "<script>console.error('<img src=x onerror=alert(2)>')</script>")
    out, rep = tmp / "out" / "results.jsonl", tmp / "report.html"
    t0 = time.monotonic()
    code = main(["score", str(sites), "--out", str(out), "--report", str(rep), "--workers", "2",
                 "-q", *FAST])
    return {"code": code, "lines": read(out), "out": out, "report": rep, "sites": sites,
            "hostile": hostile, "seconds": time.monotonic() - t0}


@pytest.mark.browser
def test_every_site_gets_exactly_one_complete_line(hostile_batch):
    b = hostile_batch
    assert b["code"] == 0
    names = sorted(p.name for p in b["sites"].iterdir())
    assert sorted(d["site"] for d in b["lines"]) == names
    for d in b["lines"]:
        assert set(d) == {"site", "path", "content_hash", "reward", "stages", "error", "seconds"}
        assert 0.0 <= d["reward"] <= 1.0 and len(d["content_hash"]) == 64
        for s in d["stages"]:
            assert set(s) >= {"name", "score", "passed", "details"}
        # every site, hostile or not, within its budgets: structure + site budget + launch slack
        assert d["seconds"] < 20 + 12 + 15, d


@pytest.mark.browser
def test_hostile_sites_score_below_good_ones(hostile_batch):
    by = {d["site"]: d for d in hostile_batch["lines"]}
    good = [d for n, d in by.items() if n.startswith("good_")]
    assert good and all(len(d["stages"]) == N and d["stages"][0]["passed"] for d in good)
    for name in ("binary_garbage", "empty", "missing_index", "symlink_escape"):
        assert by[name]["stages"][0]["passed"] is False, name
        assert len(by[name]["stages"]) == 1  # gated: no browser time spent
        assert by[name]["reward"] < 1 / (N + 1)
    for name in ("infinite_loop", "reload_loop", "memory_hog", "alert_spam", "popup_spam"):
        assert by[name]["stages"][1]["passed"] is False, name  # executed, and failed the gate
        assert 1 / (N + 1) <= by[name]["reward"] < 2 / (N + 1) <= min(
            d["reward"] for d in good), name
    ext = next(s for s in by["external_assets"]["stages"] if s["name"] == "execution")
    ext = ext["details"]
    assert ext["checks"]["sandbox_clean"] == 0.0
    assert any("cdn.example.com" in r for r in ext["blocked_requests"])


@pytest.mark.browser
def test_nothing_from_outside_leaks_into_results_or_report(hostile_batch):
    blob = hostile_batch["out"].read_text() + hostile_batch["report"].read_text()
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    assert passwd not in blob and "root:x:0:0" not in blob
    html = hostile_batch["report"].read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x onerror" not in html
    assert "'unsafe-inline'" not in html.split("script-src")[1].split('"')[0]
    assert "script-src 'sha256-" in html  # CSP: only the report's own sorter may run
    assert "default-src 'none'" in html
    for d in hostile_batch["lines"]:  # screenshots exist next to the results, named in details
        for s in (s for s in d["stages"] if s["name"] == "execution"):  # its pages: a list
            for p in s["details"].get("pages", []):
                for key in ("screenshot_desktop", "screenshot_mobile"):
                    if p.get(key):
                        assert not Path(p[key]).is_absolute()
                        assert (hostile_batch["out"].parent / p[key]).is_file()


@pytest.mark.browser
def test_duplicates_and_resume_reuse_lines(tmp_path, hostile_batch):
    sites = tmp_path / "s"
    # identical bytes under two names: scored once, two lines
    src = next(p for p in hostile_batch["sites"].iterdir() if p.name.startswith("good_"))
    shutil.copytree(src, sites / "a")
    shutil.copytree(src, sites / "b")
    out = tmp_path / "r.jsonl"
    assert main(["score", str(sites), "--out", str(out), "-q", *FAST]) == 0
    lines = read(out)
    assert [d["site"] for d in lines].count("a") == 1 and len(lines) == 2
    assert lines[0]["content_hash"] == lines[1]["content_hash"]
    assert lines[0]["reward"] == lines[1]["reward"]
    before = out.read_text()
    assert main(["score", str(sites), "--out", str(out), "--resume", "-q", *FAST]) == 0
    assert out.read_text() == before  # nothing re-scored, nothing appended


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


# budgets so long that a site hanging in the browser stops the batch until the test ends it
PARKED = ["browser.nav_timeout_s=600", "browser.page_budget_s=600", "browser.site_budget_s=600",
          "reward.timeouts_s.execution=600", "score.site_timeout_s=600", *FAST[3:]]


@pytest.mark.browser
@pytest.mark.slow
def test_sigkill_then_resume_gives_one_line_per_site(tmp_path):
    """No race: the third site (in name order, one worker) never finishes loading under the
    first run's budgets, so the run is parked with exactly two lines written when it is killed."""
    sites = generate_sites(tmp_path / "sites", 3, seed=11)
    hostile = write_hostile_sites(tmp_path / "h")
    stuck = tmp_path / "sites" / "site001_stuck"  # sorts right after site001
    shutil.copytree(hostile["infinite_loop"], stuck)
    names = sorted([s.name for s in sites] + [stuck.name])
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "vlmagent.cli", "score", str(tmp_path / "sites"), "--out",
           str(out), "--workers", "1", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([*cmd, *PARKED], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
    finally:
        workers = _children(proc.pid)  # each leads its own process group, its Chromium in it
        for group in [proc.pid, *workers]:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    first = read(out)
    assert [d["site"] for d in first] == names[:2]
    with open(out, "a") as f:
        f.write('{"site": "half a line')  # as if killed mid-write
    r = subprocess.run([*cmd, "--resume", *FAST], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    lines = read(out)
    assert sorted(d["site"] for d in lines) == names
    assert lines[:len(first)] == first  # finished work kept as it was
    assert f"{len(first)} resumed" in r.stdout


@pytest.mark.browser
def test_hard_site_timeout_kills_worker_and_batch_continues(tmp_path):
    hostile = write_hostile_sites(tmp_path / "h")
    sites = tmp_path / "s"
    shutil.copytree(hostile["infinite_loop"], sites / "a_loop")
    generate_sites(tmp_path / "g", 1, seed=5)
    shutil.copytree(next((tmp_path / "g").iterdir()), sites / "b_good")
    out = tmp_path / "r.jsonl"
    limit, budget = 12, 60  # the hard limit, far below the budgets the looping site may use
    code = main(["score", str(sites), "--out", str(out), "--workers", "1", "-q",
                 f"score.site_timeout_s={limit}", f"browser.nav_timeout_s={budget / 2}",
                 f"browser.page_budget_s={budget}", f"browser.site_budget_s={budget}",
                 f"reward.timeouts_s.execution={budget}"])
    assert code == 0
    by = {d["site"]: d for d in read(out)}
    assert f"timed out after {limit} s" in by["a_loop"]["error"] and by["a_loop"]["reward"] == 0.0
    # killed at the hard limit (checked every 0.5 s), not when its own budgets ran out
    assert limit <= by["a_loop"]["seconds"] < budget / 2
    assert by["b_good"]["error"] is None and len(by["b_good"]["stages"]) == N


def test_runner_resumes_by_id_and_prepares_only_new_jobs(tmp_path):
    """The job runner without the pool: jobs whose line is known once prepared (rejected
    responses). Resume keeps lines by id, cuts a half-written line, and prepares only new jobs."""
    cfg, out, prepared = Config(), tmp_path / "r.jsonl", []

    def prepare(job: Job) -> None:
        prepared.append(job.name)
        job.content_hash = f"h-{job.name}"
        job.line = result_line(job, {"reward": 0.25, "stages": []}, None, 0.0)

    def jobs(*names: str) -> list[Job]:
        return [Job(n, fields={"id": n}) for n in names]

    s = run_jobs(jobs("a", "b"), out, cfg, resume_by="id", prepare=prepare, progress=False)
    assert prepared == ["a", "b"] and (s.sites, s.scored, s.resumed) == (2, 2, 0)
    assert [list(d) for d in read(out)] == [["site", "path", "content_hash", "reward", "stages",
                                             "error", "seconds", "id"]] * 2
    assert read(out)[0]["path"] == "" and read(out)[1]["content_hash"] == "h-b"
    with open(out, "a") as f:
        f.write('{"site": "c", "path"')  # killed mid-write
    prepared.clear()
    s = run_jobs(jobs("a", "b", "c"), out, cfg, resume_by="id", resume=True, prepare=prepare,
                 progress=False)
    assert prepared == ["c"] and (s.sites, s.scored, s.resumed) == (3, 1, 2)
    assert [d["id"] for d in read(out)] == ["a", "b", "c"] == [d["site"] for d in s.lines]
    run_jobs(jobs("a"), out, cfg, resume_by="id", prepare=prepare, progress=False)
    assert [d["id"] for d in read(out)] == ["a"]  # without resume the file starts over
    with pytest.raises(ValueError, match="resume_by"):
        run_jobs([], out, cfg, resume_by="path")


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["score", str(tmp_path / "nope"), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such path" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward:\n  wieghts: {}\n")
    (tmp_path / "site").mkdir()
    assert main(["score", str(tmp_path / "site"), "--out", str(tmp_path / "o.jsonl"),
                 "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "reward.wieghts" in err and str(bad) in err
    assert main(["score", str(tmp_path / "site"), "--out", str(tmp_path / "o.jsonl"),
                 "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "site"), "--out", str(tmp_path / "o.jsonl"),
                 "reward.nope=1"]) == 2
