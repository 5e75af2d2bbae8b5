"""The full cascade ranks the labelled example sites (data/sites/LEVELS.json) by quality:
rewards rise with the level (Kendall tau-b >= 0.7) and every minimal pair, two sites that
differ in exactly one flaw, is ordered strictly. Scored in parallel by vlmagent.scoring."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vlmagent.config import Config
from vlmagent.scoring import sites as scoring

SITES = Path(__file__).resolve().parents[1] / "data" / "sites"
LABELS = json.loads((SITES / "LEVELS.json").read_text())


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """tau-b (ties in either list allowed), O(n^2); scipy's default kendalltau when present."""
    try:
        from scipy.stats import kendalltau
    except ImportError:
        conc = disc = tx = ty = 0
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                dx, dy = x[i] - x[j], y[i] - y[j]
                if dx == 0 and dy == 0:
                    continue
                if dx == 0:
                    tx += 1
                elif dy == 0:
                    ty += 1
                elif (dx > 0) == (dy > 0):
                    conc += 1
                else:
                    disc += 1
        return (conc - disc) / ((conc + disc + tx) * (conc + disc + ty)) ** 0.5
    return float(kendalltau(x, y).statistic)


def test_labels_cover_the_sites_and_pairs_are_real():
    dirs = {p.name for p in SITES.iterdir() if p.is_dir()}
    assert dirs == set(LABELS["levels"]) and len(dirs) >= 20
    assert {0, 1, 2, 3} == set(LABELS["levels"].values())
    flaws = {p["flaw"] for p in LABELS["pairs"]}
    assert flaws == {"low contrast", "overlapping layout", "broken link", "dead button",
                     "mobile overflow", "inconsistent palette across pages"}
    for p in LABELS["pairs"]:  # a minimal pair: same files, and exactly one of them differs
        a, b = SITES / p["better"], SITES / p["worse"]
        files = sorted(x.relative_to(a) for x in a.rglob("*") if x.is_file())
        assert files == sorted(x.relative_to(b) for x in b.rglob("*") if x.is_file()), p
        changed = [f for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
        assert len(changed) == 1, (p, changed)
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)


@pytest.mark.browser
def test_rewards_rise_with_quality_and_pairs_are_ordered(tmp_path):
    summary = scoring.score([SITES], tmp_path / "r.jsonl", Config(), workers=2, progress=False)
    by = {d["site"]: d for d in summary.lines}
    assert not summary.errors and set(by) == set(LABELS["levels"])
    names = sorted(by)
    levels = [LABELS["levels"][n] for n in names]
    rewards = [by[n]["reward"] for n in names]
    tau = kendall_tau_b(levels, rewards)
    means = [sum(r for r, lv in zip(rewards, levels) if lv == k) / levels.count(k)
             for k in range(4)]
    report = f"tau {tau:.3f}, level means {[round(x, 4) for x in means]}"
    assert tau >= 0.7, report
    assert means == sorted(means) and len(set(means)) == 4, report
    n_stages = len(Config().reward.stages)
    for n in names:  # broken sites fail a gate; every other site passes the whole cascade
        passed = all(s["passed"] for s in by[n]["stages"]) and len(by[n]["stages"]) == n_stages
        assert passed == (LABELS["levels"][n] > 0), n
    for p in LABELS["pairs"]:
        better, worse = by[p["better"]]["reward"], by[p["worse"]]["reward"]
        assert better > worse, (p, better, worse)


def _variants(root: Path) -> dict[str, Path]:
    """One page, five ways: complete, one or two images missing, blank, throwing on load."""
    index = (SITES / "bakery" / "index.html").read_text()
    hero = 'class="hero-art" src="img/croissant.svg"'
    assert hero in index and "</body>" in index
    index = index.replace(hero, 'class="hero-art" src="img/hero.svg"')
    pages = {"complete": index, "one_missing": index,
             "two_missing": index.replace('<img src="img/croissant.svg"',
                                          '<img src="img/logo.svg"'),
             "blank": index.replace("</body>", "<style>html{display:none}</style></body>"),
             "throws": index.replace("</body>", "<script>throw new Error('init')</script></body>")}
    out = {}
    for name, html in pages.items():
        shutil.copytree(SITES / "bakery", root / name)
        (root / name / "index.html").write_text(html)
        if name not in ("one_missing", "two_missing"):
            shutil.copy(root / name / "img" / "croissant.svg", root / name / "img" / "hero.svg")
        out[name] = root / name
    return out


@pytest.mark.browser
def test_the_ordering_principle_on_minimal_pairs(tmp_path):
    """Bands first (how far the site got: unscorable < fails in the browser < works), defects
    within a band: content with a broken image beats the same page blank or throwing on load,
    and loses to the same page complete; two broken images lose to one."""
    _variants(tmp_path / "v")
    summary = scoring.score([tmp_path / "v"], tmp_path / "r.jsonl", Config(), workers=2,
                            progress=False)
    r = {d["site"]: d for d in summary.lines}
    reward = {n: d["reward"] for n, d in r.items()}
    n = len(Config().reward.stages)
    assert all(s["passed"] for s in r["one_missing"]["stages"]) and len(
        r["one_missing"]["stages"]) == n, r["one_missing"]  # missing files never gate
    ex = next(s for s in r["two_missing"]["stages"] if s["name"] == "execution")["details"]
    assert ex["missing_files"] == ["/img/hero.svg", "/img/logo.svg"]
    assert reward["complete"] > reward["one_missing"] > reward["two_missing"], reward
    assert reward["two_missing"] > max(reward["blank"], reward["throws"]), reward
    for name, gate in (("blank", "index_renders"), ("throws", "index_no_exceptions")):
        ex = next(s for s in r[name]["stages"] if s["name"] == "execution")
        assert not ex["passed"] and not ex["details"]["gate"][gate], name
