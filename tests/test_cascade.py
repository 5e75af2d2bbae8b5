"""The gated composition, the cascade's gates, timeouts and content-hash cache."""
from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from vlmagent.rewards.cascade import Cascade, SiteContext, compose, site_hash
from vlmagent.types import StageScore


@dataclass
class Item:
    content_hash: str


class Fixed:
    """A stage with a scripted verdict that counts its calls."""

    def __init__(self, name: str, score: float, passed: bool):
        self.name, self.score, self.passed, self.calls = name, score, passed, 0

    def __call__(self, item, deadline):
        self.calls += 1
        return StageScore(self.name, self.score, self.passed, {"deadline_in": deadline})


def test_compose_hand_computed():
    w = {"structure": 1.0, "execution": 2.0}
    s = StageScore("structure", 1.0, True)
    e = StageScore("execution", 0.4, False)
    # p = 1 passed, q = (1*1.0 + 2*0.4) / 3 = 0.6, total = (1 + 0.6) / (2 + 1)
    assert compose([s, e], 2, w) == pytest.approx(1.6 / 3)
    # failed the first gate with score 0.5: (0 + 0.5) / 3
    assert compose([StageScore("structure", 0.5, False)], 2, w) == pytest.approx(0.5 / 3)
    # all passed, perfect: exactly 1
    assert compose([s, StageScore("execution", 1.0, True)], 2, w) == pytest.approx(1.0)
    # a failed stage with a perfect score still stays below the next band
    assert compose([StageScore("structure", 1.0, False)], 2, w) < 1 / 3


def test_failing_stage_k_always_below_passing_it():
    rng = random.Random(0)
    names = ["a", "b", "c", "d"]
    for _ in range(3000):
        n = rng.randint(1, 4)
        weights = {k: rng.choice([0.0, 0.1, 1.0, 5.0]) for k in names[:n]}

        def run(p: int) -> float:  # p stages passed, then (if p < n) one failed
            ran = [StageScore(names[i], rng.random(), True) for i in range(p)]
            if p < n:
                ran.append(StageScore(names[p], rng.choice([rng.random(), 1.0]), False))
            return compose(ran, n, weights)

        k = rng.randint(0, n - 1)  # the stage that A fails and B passes
        a, b = run(rng.randint(0, k)), run(rng.randint(k + 1, n))
        assert a < b, (n, k, a, b, weights)
        assert 0.0 <= a <= 1.0 and 0.0 <= b <= 1.0


def test_gate_stops_later_stages_and_cache_hits():
    s1, s2 = Fixed("structure", 0.2, False), Fixed("execution", 1.0, True)
    c = Cascade([s1, s2])
    r = c(Item("h1"))
    assert [s.name for s in r.stages] == ["structure"] and s2.calls == 0
    assert r.passed_stages == 0 and not r.cached
    r2 = c(Item("h1"))
    assert r2.cached and s1.calls == 1 and r2.reward == r.reward
    c(Item("h2"))
    assert s1.calls == 2  # new bytes, new run


def test_disk_cache_survives_a_new_cascade_and_fingerprint_separates(tmp_path):
    s = Fixed("structure", 0.7, True)
    Cascade([s], cache_dir=tmp_path, fingerprint="cfgA")(Item("h"))
    again = Cascade([s], cache_dir=tmp_path, fingerprint="cfgA")(Item("h"))
    assert again.cached and s.calls == 1 and again.stages[0].score == pytest.approx(0.7)
    Cascade([s], cache_dir=tmp_path, fingerprint="cfgB")(Item("h"))
    assert s.calls == 2


def test_stage_exception_fails_gate_and_is_not_cached():
    class Boom:
        name = "structure"
        calls = 0

        def __call__(self, item, deadline):
            self.calls += 1
            raise RuntimeError("kaput")

    b, later = Boom(), Fixed("execution", 1, True)
    c = Cascade([b, later])
    r = c(Item("x"))
    assert r.stages[0].passed is False and "kaput" in r.stages[0].details["error"]
    assert "kaput" in r.error and later.calls == 0 and r.reward == 0.0
    c(Item("x"))
    assert b.calls == 2


def test_deadline_passed_and_overrun_recorded():
    now = [100.0]  # the cascade's clock, advanced only by the stage: no wall-clock bounds

    class Slow:
        name = "structure"

        def __call__(self, item, deadline):
            self.deadline = deadline
            now[0] += 0.05  # the stage takes 50 ms
            return StageScore(self.name, 1.0, True)

    s = Slow()
    r = Cascade([s], timeouts_s={"structure": 0.01}, clock=lambda: now[0])(Item("x"))
    assert s.deadline == pytest.approx(100.01)  # its start plus its timeout
    assert r.stages[0].details["overran_s"] == pytest.approx(0.04)
    assert r.stages[0].seconds == pytest.approx(0.05) and r.seconds == pytest.approx(0.05)


def test_site_hash_content_addressed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "css").mkdir(parents=True)
        (d / "index.html").write_text("<p>hi</p>")
        (d / "css" / "s.css").write_text("p{}")
    assert site_hash(a) == site_hash(b)
    (b / "css" / "s.css").write_text("p{color:red}")
    assert site_hash(a) != site_hash(b)
    (a / "link").symlink_to("/etc/passwd")  # hashed by target name, never read
    h = site_hash(a)
    (a / "link").unlink()
    (a / "link").symlink_to("/etc/hostname")
    assert site_hash(a) != h
    assert site_hash(tmp_path / "nope") == site_hash(tmp_path / "nope2")
    assert SiteContext.from_dir(a).content_hash == site_hash(a)
