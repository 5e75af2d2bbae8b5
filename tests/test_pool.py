"""RewardPool as a service: real workers and Chromium. Non-blocking submit, identical projects
scored once, the cache (in memory and on file), and hard deadlines on hanging or killed workers."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from vlmagent.config import load
from vlmagent.rewards.cascade import site_hash
from vlmagent.scoring.pool import RewardPool, config_digest
from vlmagent.scoring.runner import Job, run_jobs
from vlmagent.web.sitegen import generate_sites, write_hostile_sites

LIMIT = 10  # score.site_timeout_s: far below the browser budgets, so a hanging site meets it
CFG = ["browser.max_pages=3", "browser.max_clicks_per_page=3", "browser.nav_timeout_s=30",
       "browser.page_budget_s=60", "browser.site_budget_s=60", "reward.timeouts_s.execution=60",
       f"score.site_timeout_s={LIMIT}"]


def cfg(*more: str):
    return load(None, [*CFG, *more])


def essence(result: dict | None) -> tuple | None:
    """What a reward is made of; details hold timings that differ run to run."""
    if result is None:
        return None
    return (result["reward"], result["error"],
            [(s["name"], s["passed"], s["score"]) for s in result["stages"]])


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pool")
    good, good2 = generate_sites(tmp / "gen", 2, seed=5)
    broken = tmp / "broken"
    broken.mkdir()
    (broken / "index.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Broken</title></head>'
        "<body><h1>Broken</h1><img src=missing.png><script>throw new Error('boom')</script>"
        "</body></html>")
    hostile = write_hostile_sites(tmp / "hostile")
    loop2 = shutil.copytree(hostile["infinite_loop"], tmp / "loop2")
    (loop2 / "other.html").write_text("<p>other bytes, another hash</p>")
    return {"good": good, "good2": good2, "broken": broken, "loop": hostile["infinite_loop"],
            "loop2": loop2}


@pytest.fixture(scope="module")
def baseline(sites, tmp_path_factory) -> dict[str, dict]:
    """What `vlmagent score` (run_jobs) gives the good and the broken site."""
    out = tmp_path_factory.mktemp("baseline") / "r.jsonl"
    jobs = [Job(n, sites[n], site_hash(sites[n])) for n in ("good", "broken")]
    s = run_jobs(jobs, out, cfg(), workers=1, progress=False)
    return {d["site"]: d for d in s.lines}


@pytest.mark.browser
def test_submit_dedup_cache_and_cache_file(sites, baseline, tmp_path):
    h = {n: site_hash(p) for n, p in sites.items()}
    cache = tmp_path / "cache.jsonl"
    t0 = time.monotonic()
    pool = RewardPool(cfg(), 2, tmp_path / "art", tmp_path, cache_path=cache)
    assert time.monotonic() - t0 < 1.0  # workers spawned, browsers not waited for
    with pool:
        for key, name in (("g", "good"), ("g-again", "good"), ("b", "broken")):
            t = time.monotonic()
            pool.submit(key, sites[name], h[name])
            assert time.monotonic() - t < 0.05, key
        assert pool.running() == {}  # no worker was up yet: submit did not wait for one
        done = pool.wait(timeout=90)
        assert sorted(done) == ["b", "g", "g-again"]
        for key, name in (("g", "good"), ("b", "broken")):
            d = done[key]
            assert d.content_hash == h[name] and not d.cached and d.error == baseline[name]["error"]
            assert essence(d.result) == essence(baseline[name]), name
            assert d.seconds < LIMIT
        assert baseline["good"]["error"] is None and baseline["good"]["reward"] > 0.5
        assert baseline["broken"]["reward"] < baseline["good"]["reward"]
        assert done["g-again"].result == done["g"].result  # attached: scored once
        assert done["g-again"].result is not done["g"].result  # each its own copy
        s = pool.stats
        assert (s.submitted, s.scored, s.attached, s.cache_hits, s.errors) == (3, 2, 1, 0, 0)
        assert 0 < s.busy_s < 90 and s.scored_per_s == pytest.approx(2 / s.busy_s)

        pool.submit("g", sites["good"], h["good"])  # returned, so the key may come again
        t = time.monotonic()
        (hit,) = pool.poll()
        assert time.monotonic() - t < 0.05
        assert hit.cached and hit.key == "g" and hit.result == done["g"].result
        assert (pool.stats.scored, pool.stats.cache_hits) == (2, 1)
        with pytest.raises(KeyError):
            pool.wait(["g"])  # already returned

    assert cache.read_text().count("\n") == 2  # one line per scored project
    with open(cache, "a") as f:
        f.write('{"digest": "half a li')  # killed mid-write
    with RewardPool(cfg("score.workers=7"), 1, tmp_path / "art", tmp_path,
                    cache_path=cache) as again:
        again.submit("x", sites["good"], h["good"])
        again.submit("y", sites["broken"], h["broken"])
        got = {d.key: d for d in again.poll()}
        assert got["x"].cached and got["y"].cached and again.stats.scored == 0
        assert essence(got["x"].result) == essence(done["g"].result)
        assert essence(got["y"].result) == essence(done["b"].result)
    assert cache.read_text().count("\n") == 2 and cache.read_bytes().endswith(b"\n")
    # a setting that changes rewards is another cache; the pool's size is not
    assert config_digest(cfg("reward.weights.execution=3")) != config_digest(cfg())
    assert config_digest(cfg("score.workers=7")) == config_digest(cfg())


@pytest.mark.browser
def test_hanging_and_killed_workers_get_errors_in_time(sites, baseline, tmp_path):
    h = {n: site_hash(p) for n, p in sites.items()}
    with RewardPool(cfg(), 2, tmp_path / "art", tmp_path) as pool:
        pool.submit("loop", sites["loop"], h["loop"])
        pool.submit("loop2", sites["loop2"], h["loop2"])
        end = time.monotonic() + 60
        while len(pool.running()) < 2 and time.monotonic() < end:
            assert pool.poll(0.1) == []
        seen = time.monotonic()  # both hang in their browsers now
        os.kill(pool.running()["loop2"], signal.SIGKILL)  # the worker, mid-job
        killed = pool.wait(["loop2"], timeout=5)["loop2"]
        assert killed.result is None and "worker died (exit code -9)" in killed.error
        assert killed.seconds < 5

        pool.submit("good", sites["good"], h["good"])  # on the killed worker's replacement
        loop = pool.wait(["loop"], timeout=LIMIT + 5)["loop"]
        assert time.monotonic() - seen < LIMIT + 2
        assert loop.result is None and loop.error == (
            f"timed out after {LIMIT} s; worker and browser killed")
        assert LIMIT <= loop.seconds < LIMIT + 1

        pool.submit("good2", sites["good2"], h["good2"])
        after = pool.wait(timeout=60)
        assert essence(after["good"].result) == essence(baseline["good"])
        assert after["good2"].error is None and after["good2"].result["stages"][0]["passed"]
        s = pool.stats
        assert (s.scored, s.errors, s.worker_restarts) == (4, 2, 2)



@pytest.mark.browser
def test_a_worker_whose_browser_hangs_at_start_fails_its_job_at_the_limit(sites, tmp_path):
    """Its job gets the error at the limit, and the idle pool then waits for work instead of
    respawning workers that cannot start."""
    hangs, pid = tmp_path / "hangs", tmp_path / "pid"
    hangs.write_text(f"#!/bin/sh\necho $$ > {pid}\nexec sleep 600\n")
    hangs.chmod(0o755)
    with RewardPool(cfg(f"browser.executable={hangs}", "score.worker_start_s=3"), 1,
                    tmp_path / "art", tmp_path) as pool:
        pool.submit("g", sites["good"], site_hash(sites["good"]))
        t = time.monotonic()
        d = pool.wait(timeout=10)["g"]
        assert d.result is None and d.error == "worker did not start within 3 s"
        assert 2.5 < time.monotonic() - t < 4
        assert pool.poll(1.0) == [] and pool.stats.worker_restarts == 1
    # Playwright starts a browser in a session of its own; a real one exits when the pipe to
    # its killed driver closes, this stand-in has to be ended here. Under load the script may
    # not have run yet when the worker was killed at its limit (then there is nothing to end)
    deadline = time.monotonic() + 5
    while not pid.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid.read_text()), signal.SIGKILL)
