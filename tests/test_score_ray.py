"""`vlmagent score --backend ray`: the same per-site results as the local backend, a hung site's
timeout under Ray, resume that writes nothing twice, and the usage errors of the backend.

Quick sites from data/sites (one broken, a plain one, a minimal pair, a duplicate) plus a site
that hangs in the browser; both backends score the same folder with two workers. Ray starts a local
cluster for each run and stops it after."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from vlmagent.cli import main
from vlmagent.web.sitegen import write_hostile_sites

REPO = Path(__file__).resolve().parents[1]
SITES = ["broken_script", "plain_faq", "studio", "studio_overlap"]  # quick ones
LIMIT = 30  # score.site_timeout_s: below the browser budgets (60 s), so the hanging site meets it,
# and wide enough for a normal site while Ray's own processes share 2 loaded cores
CFG = ["browser.max_pages=3", "browser.max_clicks_per_page=3", "browser.nav_timeout_s=30",
       "browser.page_budget_s=60", "browser.site_budget_s=60", "reward.timeouts_s.execution=60",
       f"score.site_timeout_s={LIMIT}"]
TIMED_OUT = f"timed out after {LIMIT} s; worker and browser killed"


def read(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.read_text().splitlines()]


def essence(d: dict) -> tuple:
    """What a line's reward is made of; details hold timings that differ run to run."""
    return (d["site"], d["path"], d["content_hash"], pytest.approx(d["reward"], abs=1e-6),
            d["error"], [(s["name"], s["passed"], pytest.approx(s["score"], abs=1e-6))
                         for s in d["stages"]])


def score(sites: Path, out: Path, *more: str) -> int:
    return main(["score", str(sites), "--out", str(out), "--workers", "2", "-q", *CFG, *more])


def test_the_backend_comes_from_the_flag_or_the_config(tmp_path, capsys, monkeypatch):
    site = tmp_path / "s"
    site.mkdir()
    (site / "index.html").write_text("<p>hi</p>")
    out = tmp_path / "r.jsonl"
    assert score(site, out, "score.backend=spark") == 2
    assert "score.backend must be one of local, ray, got 'spark'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: not a choice
        score(site, out, "--backend", "dask")
    assert e.value.code == 2 and "invalid choice: 'dask'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the package were not installed
    for how in (["--backend", "ray"], ["score.backend=ray"]):
        out.write_text("kept\n")
        assert score(site, out, *how) == 2
        err = capsys.readouterr().err
        assert "needs the `ray` package" in err and "'.[ray]'" in err, err
        assert out.read_text() == "kept\n"  # refused before the results file was touched


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("ray")
    sites = tmp / "sites"
    for name in SITES:
        shutil.copytree(REPO / "data" / "sites" / name, sites / name)
    shutil.copytree(REPO / "data" / "sites" / "studio", sites / "studio_copy")  # scored once
    hostile = write_hostile_sites(tmp / "hostile")
    shutil.copytree(hostile["infinite_loop"], sites / "hangs")
    local, ray = tmp / "local" / "r.jsonl", tmp / "ray" / "r.jsonl"
    codes = {"local": score(sites, local),
             "ray": score(sites, ray, "--backend", "ray", "--report", str(tmp / "ray.html"))}
    return {"sites": sites, "codes": codes, "local": read(local), "ray": read(ray),
            "ray_out": ray, "report": tmp / "ray.html"}


@pytest.mark.browser
@pytest.mark.slow
def test_ray_backend_gives_the_local_backends_lines(runs):
    import ray

    assert runs["codes"] == {"local": 0, "ray": 0}
    assert not ray.is_initialized()  # the run stopped the cluster it started
    names = sorted([*SITES, "studio_copy", "hangs"])
    local = {d["site"]: d for d in runs["local"]}
    by = {d["site"]: d for d in runs["ray"]}
    assert sorted(by) == sorted(local) == names and len(runs["ray"]) == len(names)
    for name in names:
        assert essence(by[name]) == essence(local[name]), name
        assert set(by[name]) == set(local[name])
    assert by["studio"]["error"] is None and by["studio"]["reward"] > 0.9
    assert by["studio_copy"]["stages"] == by["studio"]["stages"]  # the same bytes, scored once
    assert by["broken_script"]["reward"] < by["plain_faq"]["reward"] < by["studio"]["reward"]
    assert by["studio_overlap"]["reward"] < by["studio"]["reward"]  # the minimal pair, ordered
    # screenshots from the actors lie beside the results, named relative to them
    shots = [p[key] for d in runs["ray"] for s in d["stages"] if s["name"] == "execution"
             for p in s["details"].get("pages", [])
             for key in ("screenshot_desktop", "screenshot_mobile") if p.get(key)]
    assert shots and not any(Path(p).is_absolute() for p in shots)
    assert all((runs["ray_out"].parent / p).is_file() for p in shots)
    html = runs["report"].read_text()
    assert all(name in html for name in names)


@pytest.mark.browser
@pytest.mark.slow
def test_a_hung_site_gets_its_timeout_under_ray(runs):
    hung = {d["site"]: d for d in runs["ray"]}["hangs"]
    assert hung["error"] == TIMED_OUT and hung["reward"] == 0.0 and hung["stages"] == []
    assert LIMIT <= hung["seconds"] < LIMIT + 3  # killed at the limit, not at its own budgets


@pytest.fixture(scope="module")
def ray_session(runs):
    """A Ray session of the test's own, opened after the runs that start and stop their own
    cluster: pools use it and leave it running."""
    import ray

    from vlmagent.scoring.ray_backend import loopback_only

    with loopback_only():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.browser
@pytest.mark.slow
def test_resume_under_ray_writes_nothing_twice(runs, ray_session, tmp_path):
    out = tmp_path / "r.jsonl"
    lost = {"broken_script", "studio"}  # as if the run was killed before they were written
    kept = [d for d in runs["ray"] if d["site"] not in lost]
    out.write_text("".join(json.dumps(d) + "\n" for d in kept) + '{"site": "half a li')
    assert score(runs["sites"], out, "--resume", "--backend", "ray") == 0
    lines = read(out)
    assert lines[:len(kept)] == kept  # finished work kept as it was, hung site included
    assert sorted(d["site"] for d in lines) == sorted(d["site"] for d in runs["ray"])
    assert {d["site"] for d in lines[len(kept):]} == lost
    local = {d["site"]: d for d in runs["local"]}
    assert all(essence(d) == essence(local[d["site"]]) for d in lines[len(kept):])
    before = out.read_bytes()
    assert score(runs["sites"], out, "--resume", "--backend", "ray") == 0  # all resumed:
    assert out.read_bytes() == before  # nothing scored, nothing written
    assert ray_session.is_initialized()  # the caller's session: used, left running


@pytest.mark.browser
@pytest.mark.slow
def test_web_reward_on_ray_gives_the_local_rewards(ray_session, tmp_path):
    """Online RL's reward (rewards/web.py) on the same setting: the same results."""
    from vlmagent.config import load
    from vlmagent.rewards.web import WebReward

    rows = [json.loads(x) for x in (REPO / "data" / "responses" / "static.jsonl").open()]
    rows = [r for r in rows if r["id"] in ("shop-unstyled", "escape-attempt", "no-index")]
    got = {}
    for backend in ("local", "ray"):
        cfg = load(None, [*CFG, f"score.backend={backend}"])
        with WebReward(cfg, tmp_path / backend, workers=1) as web:
            for r in rows:
                web.submit(r["id"], r["text"], "static")
            got[backend] = web.collect([r["id"] for r in rows])
            pool = next(iter(web.pools.values()))[2]
            assert type(pool).__name__ == {"local": "RewardPool", "ray": "RayRewardPool"}[backend]
    for r in rows:
        a, b = got["local"][r["id"]], got["ray"][r["id"]]
        assert b.reward == pytest.approx(a.reward, abs=1e-6) and b.metrics == a.metrics, r["id"]
        assert essence({**b.line, "site": "", "path": ""}) == essence(
            {**a.line, "site": "", "path": ""})
    assert got["ray"]["shop-unstyled"].reward > 0.5
