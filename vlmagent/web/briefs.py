"""The web-generation prompts dataset: deterministic website requests across nine categories.

Every record is a plain dict:
    {"id": "shop-012", "category": "shop", "scaffold": "static" | "vite-react",
     "split": "train" | "heldout", "prompt": "<the user's request>", "spec": {...}}
`spec` is what the request asks for (name, tagline, sections, accent, interactive) plus what the
expert (web/expert.py) needs to build it: one sentence per section (`blurbs`), the topic and the
interactive widget's words (`widget`). Names are combinations of word lists, unique across the
whole set; a fifth of every category is held out, so held-out names never reach training.
The committed file is data/webgen/prompts.jsonl; `python -m vlmagent.web.briefs --out PATH`
writes the same bytes again (string seeds: random.Random hashes them with sha512, not hash()).
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

# the vocabulary the requests are made of (brief_words.py); ACCENTS and PHRASE are re-exported
from vlmagent.web.brief_words import (  # noqa: F401
    ACCENTS,
    ADJ,
    CATS,
    CITIES,
    PHRASE,
    REACT,
    TEMPLATES,
)

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data/webgen/prompts.jsonl"
PER_CATEGORY, HELDOUT_STATIC, HELDOUT_VITE = 45, 6, 3  # 1/3 vite-react; 9 of 45 held out


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _and(xs: list[str]) -> str:
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _topic(cat: str, t: list[str], name: str, rng: random.Random) -> dict[str, Any]:
    """What, use (for blurbs), tagline and the widget data each kind may need, for one topic."""
    n = rng.randint(2, 9)
    if cat == "landing":
        return {"what": t[1], "use": t[2], "tagline": t[3],
                "toggle": ("Show pricing", f"Pro costs ${n + 3} a month, all features."),
                "counter": ("Join the waitlist", "people on the waitlist", 40 * n,
                            "You are on the waitlist!"),
                "tabs": (["Free", "Pro", "Team"], ["Free: one person, the basics.",
                                                   f"Pro: ${n + 3} a month, no limits.",
                                                   f"Team: ${3 * n + 9} a month, ten people."])}
    if cat == "portfolio":
        city = rng.choice(CITIES)
        items = [[f"{a} {t[2 + i % 2]}", t[2 + i % 2]] for i, a in enumerate(rng.sample(ADJ, 4))]
        return {"what": f"{_a(t[1])} in {city}", "use": t[1], "city": city,
                "tagline": f"{_cap(t[1])} based in {city}.", "filter": items,
                "toggle": ("Show clients", "Clients: a museum and two publishers.")}
    if cat == "shop":
        items = [[p, ["Classics", "New"][i % 2]] for i, p in enumerate(t[2:6])]
        return {"what": f"a shop selling {t[1]}", "use": t[1], "tagline": rng.choice([
            f"{_cap(t[1])}, made with care.", f"The best {t[1]} in town."]), "filter": items,
            "counter": ("Add to cart", "items in your cart", 0,
                        f"{t[2]} is in your cart.")}
    if cat == "dashboard":
        vals = [[(k + 1) * rng.randint(3, 40) for k in range(3)] for _ in range(3)]
        return {"what": f"a dashboard for {t[1]}", "use": t[1],
                "tagline": f"Live numbers for {t[1]}.",
                "tabs": (["Today", "This week", "This month"], [
                    ", ".join(f"{m}: {v * (3 * p + 1)}" for m, v in zip(t[2:5], vals[p]))
                    for p in range(3)]),
                "toggle": ("Show alerts", "No alerts in the last hour.")}
    if cat == "form":
        fields = [["Name", "text"]] + [f.split(":") for f in t[4:]]
        return {"what": t[1], "use": t[1], "tagline": rng.choice([
            f"Your {t[2]} in one minute.", f"Quick, friendly {t[2]}."]),
            "form": (t[3], fields, "Thanks! We will reply within a day.")}
    if cat == "game":
        return {"what": f"a small browser game about {t[0].lower()}", "use": t[0].lower(),
                "tagline": f"{t[1]}, then one more.",
                "counter": (t[1], t[2], 0, f"Nice! {_cap(t[2])}: 1."),
                "quiz": (t[3], t[4:7], 1)}
    if cat == "docs":
        pkg = name.lower()
        return {"what": t[1], "use": t[1], "tagline": f"{_cap(t[1])}.",
                "tabs": (["npm", "yarn", "pnpm"], [
                    f"npm install {pkg}", f"yarn add {pkg}", f"pnpm add {pkg}"]),
                "toggle": ("Show an example", f"import x from \"{pkg}\"; x.start();")}
    if cat == "blog":
        posts = [[f"{a} {t[2 + i % 2].lower()} notes", t[2 + i % 2]]
                 for i, a in enumerate(rng.sample(ADJ, 4))]
        return {"what": t[1], "use": t[1], "tagline": rng.choice([
            f"Notes on {t[2].lower()} and {t[3].lower()}.", "Small stories, told slowly."]),
            "filter": posts, "counter": ("Like this blog", "likes", 3 * n, "Thanks for the like!"),
            "toggle": ("Read more", "It began as a notebook, years ago.")}
    ins = [x.split(":") for x in t[2:4]]  # tool: two inputs, a formula valid in JS and Python
    return {"what": _a(t[1]), "use": t[1], "tagline": rng.choice([
        f"{_cap(t[1])} in one click.", "Numbers in, answer out."]),
        "calculator": ([[a, int(b)] for a, b in ins], t[4], t[5])}


def _widget(kind: str, d: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The widget spec (action + result for every kind, so one skeleton fits all) and its
    description in the prompt."""
    if kind == "counter":
        action, label, start, done = d["counter"]
        return ({"action": action, "result": done, "label": label, "start": start},
                f"a button labelled \"{action}\" that counts {label}")
    if kind == "toggle":
        action, text = d["toggle"]
        return {"action": action, "result": text}, f"a button labelled \"{action}\" that shows more"
    if kind == "tabs":
        opts, panels = d["tabs"]
        return ({"action": f"Show {opts[0]}", "result": panels[0], "options": opts,
                 "panels": panels}, f"tabs for {_and(opts)}")
    if kind == "filter":
        items = d["filter"]
        tags = sorted({tg for _, tg in items}, key=[tg for _, tg in items].index)
        return ({"action": f"Show {tags[0]}", "result": "Showing: " + ", ".join(
            n for n, tg in items if tg == tags[0]) + ".", "options": tags, "items": items},
            f"buttons that filter the list by {_and(tags)}")
    if kind == "form":
        action, fields, thanks = d["form"]
        return ({"action": action, "result": thanks, "fields": fields},
                f"a form asking for {_and([f[0].lower() for f in fields])}")
    if kind == "quiz":
        q, opts, ans = d["quiz"]
        return ({"action": "Show the answer", "result": f"{opts[ans]} is right!", "question": q,
                 "options": opts, "answer": ans}, f"a one-question quiz: \"{q}\"")
    inputs, formula, output = d["calculator"]
    value = eval(formula, {}, {"a": inputs[0][1], "b": inputs[1][1]})  # our own table's formula
    return ({"action": "Calculate", "result": f"{output}: {value:.2f}", "inputs": inputs,
             "formula": formula, "output": output},
            f"a calculator that works out {output.split(' (')[0].lower()} from "
            f"{_and([i[0].split(' (')[0].lower() for i in inputs])}")


def _category(cat: str, taken: set[str]) -> list[dict[str, Any]]:
    c, rng = CATS[cat], random.Random(f"vlmagent-briefs-{cat}")
    pairs = [(f, t) for f in c["first"] for t in c["topics"]]
    rng.shuffle(pairs)
    pairs.sort(key=lambda p: c["topics"].index(p[1]))  # stable: each topic's firsts stay shuffled
    by_topic = [[p for p in pairs if p[1] is t] for t in c["topics"]]
    recs: list[dict[str, Any]] = []
    i = 0
    while len(recs) < PER_CATEGORY:  # round-robin over topics: every topic about equally often
        first, t = by_topic[i % len(by_topic)][i // len(by_topic)]
        i += 1
        name = f"{first}{t[0]}" if cat == "docs" else f"{first} {t[0]}"
        if name.lower() in taken:
            continue
        taken.add(name.lower())
        k = len(recs)
        d = _topic(cat, t, name, rng)
        titles = list(c["sections"])
        secs = sorted(rng.sample(titles, rng.randint(2, 4)), key=titles.index)
        kind = c["kinds"][k % len(c["kinds"])]
        widget, wtext = _widget(kind, d)
        spec = {"name": name, "tagline": d["tagline"], "topic": d["what"], "sections": secs,
                "blurbs": [c["sections"][s].format(name=name, use=d["use"],
                                                   city=d.get("city", "")) for s in secs],
                "accent": rng.choice(ACCENTS), "interactive": kind, "widget": widget}
        scaffold = "vite-react" if k % 3 == 2 else "static"
        prompt = rng.choice(TEMPLATES).format(
            phrase=PHRASE[cat], name=name, what=d["what"], tagline=d["tagline"],
            secs=_and(secs), accent=spec["accent"], widget=wtext)
        if scaffold == "vite-react":
            prompt += rng.choice(REACT)
        recs.append({"id": f"{cat}-{k:03d}", "category": cat, "scaffold": scaffold,
                     "split": "train", "prompt": prompt, "spec": spec})
    # Held out: a fixed share of each scaffold, so the split mirrors the whole set.
    for scaffold, n in (("static", HELDOUT_STATIC), ("vite-react", HELDOUT_VITE)):
        for r in rng.sample([r for r in recs if r["scaffold"] == scaffold], n):
            r["split"] = "heldout"
    return recs


def generate() -> list[dict[str, Any]]:
    """Every record, in category order; the same list on every run."""
    taken: set[str] = set()
    recs = [r for cat in CATS for r in _category(cat, taken)]
    train = "\n".join(json.dumps(r).lower() for r in recs if r["split"] == "train")
    leaked = [r["spec"]["name"] for r in recs
              if r["split"] == "heldout" and r["spec"]["name"].lower() in train]
    if leaked:  # names are unique, so only a name inside another record's words could leak
        raise AssertionError(f"held-out names occur in train records: {leaked}")
    return recs


def write_prompts(path: str | Path = DEFAULT_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generate()),
                    encoding="utf-8")
    return path


def load_prompts(path: str | Path = DEFAULT_PATH, split: str | None = None,
                 scaffolds: list[str] | tuple[str, ...] | str | None = None,
                 categories: list[str] | tuple[str, ...] | str | None = None
                 ) -> list[dict[str, Any]]:
    """Records of the JSONL at path, filtered by split, scaffold(s) and category(ies)."""
    def as_set(v: Any) -> set[str] | None:
        return None if v is None else {v} if isinstance(v, str) else set(v)

    scs, cats = as_set(scaffolds), as_set(categories)
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if ((split is None or r["split"] == split) and (scs is None or r["scaffold"] in scs)
                and (cats is None or r["category"] in cats)):
            out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write the web-generation prompts (JSONL)")
    ap.add_argument("--out", default=str(DEFAULT_PATH))
    args = ap.parse_args(argv)
    recs = load_prompts(write_prompts(args.out))
    print(f"wrote {len(recs)} records to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
