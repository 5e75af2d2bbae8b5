"""The tool-call debugger: its step logic directly, with a real tiny model, its HTTP API, and
the page in a real Chromium (load, crop, edit + re-run, bad input, replay; no page errors)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from PIL import Image, ImageChops

from vlmagent import agent, trajectory
from vlmagent.config import AgentConfig, Config
from vlmagent.debug import DebugError, Session, open_session, shipped_sample, view
from vlmagent.debug.samples import make_shipped_sample
from vlmagent.debug.server import bind_warning, make_server, url_of
from vlmagent.images import QWEN2_5_VL_DEFAULT
from vlmagent.protocol import FORMATS
from vlmagent.types import ToolCall

HERMES = FORMATS["hermes"]
CROP = HERMES.render_call(ToolCall("crop", {"image": "image", "bbox": [80, 240, 140, 310]}))
ANSWER = "</think_with_tools><answer>2</answer>"


def call_text(name: str, **args) -> str:
    return HERMES.render_call(ToolCall(name, args))


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a, b).getbbox() is None


@pytest.fixture
def s() -> Session:
    return open_session(Config())


# ---------------------------------------------------------------- step logic, no model
def test_shipped_sample_is_what_zoomqa_generates(tmp_path):
    sample = shipped_sample()
    regen = make_shipped_sample(tmp_path)
    assert (sample.answer, sample.meta) == (regen.answer, regen.meta)
    with Image.open(sample.images["image"]) as a, Image.open(tmp_path / "zoomqa-sample.png") as b:
        assert same(a.convert("RGB"), b.convert("RGB"))


def test_manual_crop_returns_image_with_budget_tokens(s):
    st = view.state(s, view.ImageStore())
    assert "crop" in st["suggest"] and st["policy"]["tokenized"] is False
    assert "smart_resize" in st["policy"]["note"]
    s.step(CROP)
    turns = s.episode.traj.turns
    assert [t.role for t in turns] == ["system", "user", "assistant", "tool"]
    assert turns[2].tool_call == ToolCall("crop", {"image": "image", "bbox": [80, 240, 140, 310]},
                                          turns[2].tool_call.raw)
    assert turns[3].error is None and turns[3].images == ["tool_1"]
    v = view.episode_view(s, s.trajectory(), view.ImageStore(), live=True)
    [prompt_img] = v["turns"][1]["images"]
    [crop] = v["turns"][3]["images"]
    assert prompt_img["seen"] == [532, 364] and prompt_img["tokens"] == 19 * 13
    # the crop was cut from the ORIGINAL pixels: 60x70 seen px -> about 113x128 original
    assert crop["original"][0] > 100 and crop["seen"][0] % 28 == 0
    assert crop["tokens"] == (crop["seen"][0] // 28) * (crop["seen"][1] // 28)
    assert v["n_tokens"] == 0  # no tokenizer: no token ids, and the view says so via the note


def test_each_image_shows_its_router_level_and_tokens():
    from dataclasses import replace

    from vlmagent.config import RouterConfig

    cfg = Config()
    low = replace(cfg, agent=replace(cfg.agent, router=RouterConfig(kind="fixed",
                                                                    fixed_level=1)))
    views = []
    for c in (cfg, low):
        sess = open_session(c)
        sess.step(CROP.replace("[80, 240, 140, 310]", "[40, 120, 70, 155]"))
        views.append(view.episode_view(sess, sess.trajectory(), view.ImageStore(), live=True))
    full_img, low_img = (v["turns"][1]["images"][0] for v in views)
    assert (full_img["level"], full_img["seen"], full_img["tokens"]) == (0, [532, 364], 19 * 13)
    # a quarter of the pixel budget: about a quarter of the tokens, and the level says why
    assert low_img["level"] == 1 and low_img["tokens"] <= full_img["tokens"] // 4 + 4
    assert low_img["seen"][0] < full_img["seen"][0]


def test_malformed_call_gives_error_turn_and_session_continues(s):
    s.step("<tool_call>{bad json</tool_call>")
    v = view.episode_view(s, s.trajectory(), view.ImageStore(), live=True)
    assert "broken JSON" in v["turns"][2]["parse_error"]
    assert v["turns"][3]["error"].startswith("could not parse the tool call")
    s.step(call_text("zoom", bbox=[0, 0, 5000, 5000]))  # box outside the image
    assert "mostly outside the image" in s.episode.traj.turns[-1].error
    s.step(call_text("rotate", angle=90))
    assert "unknown tool 'rotate'; valid tools: crop, zoom" in s.episode.traj.turns[-1].error
    s.step(ANSWER)
    assert s.episode.done and s.episode.traj.finish == "answer"
    assert s.episode.traj.n_tool_errors == 3
    with pytest.raises(DebugError, match="episode is over"):
        s.step(CROP)


def test_edit_call_and_rerun_drops_later_turns(s):
    s.step(CROP)
    s.step(call_text("zoom", image="tool_1", bbox=[60, 60, 200, 200]))
    s.step(ANSWER)
    first_crop = s.episode.traj.images[1]
    s.rerun(0, json.dumps({"name": "crop", "arguments": {"bbox": [200, 100, 400, 300]}}))
    t = s.episode.traj
    assert [x.role for x in t.turns] == ["system", "user", "assistant", "tool"]
    assert [e.source for e in s.entries] == ["edited"]
    assert t.turns[2].tool_call.arguments == {"bbox": [200, 100, 400, 300]}
    assert t.turns[2].text.startswith("<think_with_tools>") is False  # CROP had no prefix
    assert len(t.images) == 2 and not same(t.images[1], first_crop)
    assert not s.episode.done  # manual: the later turns are the person's to write again
    s.rerun(0)  # no call: drop turn 0 and everything after it
    assert [x.role for x in s.episode.traj.turns] == ["system", "user"] and not s.entries


@pytest.mark.parametrize("call, message", [
    ("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"),
    ('{"arguments": {}}', 'non-empty "name"'), ('{"name": "crop", "arguments": [1]}',
                                                 '"arguments" must be a JSON object')])
def test_bad_edited_call_is_readable_and_changes_nothing(s, call, message):
    s.step(CROP)
    before = list(s.episode.traj.token_ids), [t.text for t in s.episode.traj.turns]
    with pytest.raises(DebugError, match=message):
        s.rerun(0, call)
    assert (list(s.episode.traj.token_ids), [t.text for t in s.episode.traj.turns]) == before
    with pytest.raises(DebugError, match="no assistant turn 5"):
        s.rerun(5)


def test_bad_uploads_and_files(s, tmp_path):
    with pytest.raises(DebugError, match="not an image"):
        s.load_upload(b"<html>nope</html>", "what?")
    with pytest.raises(DebugError, match="write a question"):
        s.load_upload(b"x", " ")
    with pytest.raises(DebugError, match="limit is 20 MiB"):
        s.load_upload(b"\0" * (21 << 20), "what?")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(DebugError, match="not a trajectory file"):
        s.open_replay(str(bad))
    with pytest.raises(DebugError, match="no trajectory file"):
        s.open_replay(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DebugError, match="unknown domain"):
        s.load_domain("nope", 1)
    with pytest.raises(DebugError, match="seed must be"):
        s.load_domain("zoomqa", -1)
    assert s.sample.id == "zoomqa-3-00000"  # the session is still on its sample
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 30)).save(buf, format="PNG")
    s.load_upload(buf.getvalue(), "What colour?", "green")
    assert s.sample.images["image"].size == (300, 200)
    s.step("<answer>Green.</answer>")
    assert s.score_answer()["reward"] == 1.0


def test_score_uses_domain_check(s):
    with pytest.raises(DebugError, match="nothing to score"):
        s.score_answer()
    s.step("<answer>7</answer>")
    assert s.score_answer() == {"reward": 0.0, "accuracy": 0.0, "answer": "7", "expected": "2",
                                "check": "zoomqa.check",
                                "terms": {"answer": 0.0, "format": 0.0, "tool_quality": 0.0,
                                          "tool_bonus": 0.0, "mode": 0.0, "resolution": 0.0}}
    s.rerun(0)
    s.step(CROP)
    s.step(ANSWER)
    assert s.score_answer()["reward"] == 1.0


def test_generated_samples_by_seed(s):
    s.load_domain("zoomgrid", 5)
    a = s.sample
    # at the default 448x448 budget a 224 px zoomgrid image is not shrunk: the domain warns,
    # and the page shows the warning with the sample
    assert any("zoomgrid" in n for n in view.state(s, view.ImageStore())["sample"]["notes"])
    assert a.id == "zoomgrid-5-00000" and a.images["image"].size == (224, 224)
    s.load_domain("zoomgrid", 5)
    assert same(a.images["image"], s.sample.images["image"]) and a.answer == s.sample.answer
    s.load_domain("zoomqa", 2, "shape")
    assert s.sample.meta["kind"] == "shape" and "frame" in s.sample.prompt


def test_replay_of_saved_trajectory_gives_same_images(s, tmp_path):
    s.step(CROP)
    s.step(call_text("zoom", image="tool_1", bbox=[40, 40, 220, 200], factor=3))
    s.step(ANSWER)
    s.score_answer()
    live = [im.copy() for im in s.episode.traj.images]
    path = s.save(str(tmp_path / "ep.jsonl"))
    s.open_replay(str(path))
    [t] = s.replay
    assert len(t.images) == len(live) == 3 and all(same(a, b) for a, b in zip(t.images, live))
    assert t.reward == 1.0 and t.meta["debug_sources"] == ["manual"] * 3
    store = view.ImageStore()
    lv = view.episode_view(s, s.trajectory(), store, live=True)
    rv = view.episode_view(s, t, store, live=False)
    urls = lambda v: [im["url"] for x in v["turns"] for im in x["images"]]  # noqa: E731
    assert urls(lv) == urls(rv)  # content keys: the very same pixels
    assert [x.get("call") for x in rv["turns"]] == [x.get("call") for x in lv["turns"]]


# ---------------------------------------------------------------- with a tiny model
@pytest.fixture
def tiny_dir(tiny) -> str:
    """The session's tiny model folder, as the page and the session take it (text)."""
    return str(tiny)


def test_model_step_gives_text_tokens_mask_and_logps(tiny_dir):
    cfg = Config(agent=AgentConfig(max_new_tokens=12, max_turns=2))
    s = open_session(cfg, tiny_dir)
    assert s.tokenized and not s.manual
    s.step(seed=0)
    ep = s.episode
    a = ep.traj.turns[2]
    assert a.role == "assistant" and s.entries[0].source == "model"
    n_policy = sum(ep.traj.loss_mask)
    assert 0 < n_policy <= 12 and len(ep.logps) == n_policy
    assert sum(ep.traj.loss_mask[a.span[0]:a.span[1]]) == a.span[1] - a.span[0]
    st = view.state(s, view.ImageStore())
    segs = st["episode"]["tokens"]
    assert sum(n for _, m, n, _ in segs if m) == n_policy
    assert all(lp is not None for _, m, _, lp in segs if m)
    [img] = [x for x in segs if x[0].startswith("<|image_pad|>")]
    assert img[2] == st["episode"]["turns"][1]["images"][0]["tokens"] == \
        s.policy.tokens_per_image((532, 364))
    s.run(seed=1)
    assert s.episode.done and len(s.entries) <= 2
    # edit turn 0 into a crop: the model re-samples what follows, from the crop's image
    s.rerun(0, json.dumps({"name": "crop", "arguments": {"bbox": [80, 240, 140, 310]}}), seed=2)
    assert [e.source for e in s.entries] == ["edited", "model"] and s.episode.done
    assert s.episode.traj.turns[3].images == ["tool_1"] and len(s.episode.traj.images) == 2
    assert s.trajectory().logps is None  # an edited turn has no sampled log-probs


def test_manual_with_tokenizer_matches_agent_rollout(tiny_dir):
    s = open_session(Config())
    s.set_policy("manual", tiny_dir)
    s.step(CROP)
    s.step(ANSWER)
    cfg = Config().agent
    [ref] = agent.rollout(s.policy, [shipped_sample()], cfg,
                          actor=agent.ScriptedActor(s.policy, lambda e: [CROP, ANSWER]))
    assert s.episode.traj.token_ids == ref.token_ids
    assert s.episode.traj.loss_mask == ref.loss_mask
    assert all(same(a, b) for a, b in zip(s.episode.traj.images, ref.images))
    assert s.trajectory().logps is None  # typed turns have no sampled log-probs


# ---------------------------------------------------------------- HTTP
@pytest.fixture
def server():
    srv = make_server(open_session(Config()), "127.0.0.1", 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def post(url: str, body: dict, ctype: str = "application/json", host: str | None = None):
    req = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": ctype, **({"Host": host} if host
                                                                    else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_guards_and_errors(server):
    base = url_of(server)
    assert post(base + "api/step", {"text": CROP}, ctype="text/plain")[0] == 415
    assert post(base + "api/step", {"text": CROP}, host="evil.example:80")[0] == 403
    status, reply = post(base + "api/rerun", {"turn": 0, "call": "{"})
    assert status == 200 and reply["ok"] is False and "no assistant turn" in reply["error"]
    status, reply = post(base + "api/step", {"text": CROP})
    assert reply["ok"] and reply["state"]["episode"]["turns"][3]["images"]
    url = reply["state"]["episode"]["turns"][3]["images"][0]["url"]
    with urllib.request.urlopen(base + url.lstrip("/"), timeout=10) as r:
        assert Image.open(io.BytesIO(r.read())).size[0] > 0
    assert post(base + "api/nope", {})[0] == 404


def test_cli_debug_starts_on_shipped_sample_and_prints_address():
    proc = subprocess.Popen([sys.executable, "-m", "vlmagent.cli", "debug", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("vlmagent debug: serving on http://127.0.0.1:"), line
        url = line.split()[4]
        with urllib.request.urlopen(url + "api/state", timeout=10) as r:
            st = json.loads(r.read())["state"]
        assert st["sample"]["id"] == "zoomqa-3-00000" and st["policy"]["mode"] == "manual"
        assert "crop" in st["suggest"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert bind_warning("127.0.0.1") is None and bind_warning("localhost") is None
    assert "anyone who can reach" in bind_warning("0.0.0.0")


# ---------------------------------------------------------------- the page in Chromium
@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    from vlmagent.config import BrowserConfig
    from vlmagent.web.browser import BASE_ARGS, find_chromium

    try:
        exe = find_chromium(BrowserConfig())
    except Exception as e:
        pytest.skip(str(e))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=BASE_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, server):
    ctx = chromium.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    pg.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    pg.set_default_timeout(10_000)
    pg.goto(url_of(server))
    pg.wait_for_selector(".turn[data-role=user] img")
    yield pg
    ctx.close()
    assert problems == []


def natural_width(pg, selector: str) -> int:
    pg.wait_for_function(f"document.querySelector({selector!r})?.complete")
    return pg.eval_on_selector(selector, "img => img.naturalWidth")


@pytest.mark.browser
def test_page_crop_edit_rerun(page):
    pg = page
    assert "vlmagent" in pg.title()
    assert '"name": "crop"' in pg.input_value("#assistant-text")  # pre-filled example
    pg.click("#step")
    tool_img = ".turn[data-role=tool] img"
    pg.wait_for_selector(tool_img)
    assert natural_width(pg, tool_img) > 0
    first_src = pg.get_attribute(tool_img, "src")
    assert "tokens (estimated" in pg.inner_text(".turn[data-role=tool] figcaption")
    assert '"name": "zoom"' in pg.input_value("#assistant-text")  # next suggestion
    pg.click("#step")
    pg.wait_for_function("document.querySelectorAll('.turn[data-role=tool]').length == 2")
    # edit turn 0's call and re-run from there: the zoom turn is dropped
    pg.click(".turn[data-role=assistant] .edit summary")
    pg.fill(".turn[data-role=assistant] .call-edit",
            '{"name": "zoom", "arguments": {"bbox": [300, 60, 500, 200], "factor": 3}}')
    pg.click(".turn[data-role=assistant] .rerun")
    pg.wait_for_function("document.querySelectorAll('.turn[data-role=tool]').length == 1")
    assert pg.get_attribute(tool_img, "src") != first_src and natural_width(pg, tool_img) > 0
    assert "edited" in pg.inner_text(".turn[data-role=assistant] header")
    # drag a box on the prompt image: the composer gets a crop call with that box
    img = pg.locator(".turn[data-role=user] img")
    img.scroll_into_view_if_needed()
    box = img.bounding_box()
    x, y = box["x"] + 1, box["y"] + 1  # inside the 1 px border: the image's own pixels
    pg.mouse.move(x + 20, y + 30)
    pg.mouse.down()
    pg.mouse.move(x + 120, y + 110, steps=4)
    pg.mouse.up()
    text = pg.input_value("#assistant-text")
    call = HERMES.parse(text)
    assert call.name == "crop" and call.arguments["image"] == "image"
    assert all(abs(a - b) <= 1 for a, b in zip(call.arguments["bbox"], [20, 30, 120, 110]))
    pg.fill("#assistant-text", ANSWER)
    pg.click("#step")
    pg.click("#score")
    pg.wait_for_selector("#score-out .good")
    assert "reward 1" in pg.inner_text("#score-out")


@pytest.mark.browser
def test_page_bad_input_is_readable_and_session_usable(page, tmp_path):
    pg = page

    def error_after(action) -> str:
        action()
        pg.wait_for_selector("#error:not([hidden])")
        text = pg.inner_text("#error-text")
        pg.click("#error-close")
        return text

    pg.fill("#assistant-text", "<tool_call>{oops</tool_call>")
    pg.click("#step")
    pg.wait_for_selector(".parse-error")
    assert "broken JSON" in pg.inner_text(".parse-error")
    assert "could not parse" in pg.inner_text(".tool-error")
    pg.fill(".turn[data-role=assistant] .call-edit", '{"name": "crop", "arguments": ')
    assert "not valid JSON" in error_after(lambda: pg.click(".turn[data-role=assistant] .rerun"))
    pg.fill("#assistant-text", call_text("crop", bbox=[900, 900, 1000, 1000]))
    pg.click("#step")
    pg.wait_for_function("document.querySelectorAll('.tool-error').length == 2")
    assert "mostly outside the image" in pg.locator(".tool-error").nth(1).inner_text()
    pg.fill("#assistant-text", call_text("blur", radius=3))
    pg.click("#step")
    pg.wait_for_function("document.querySelectorAll('.tool-error').length == 3")
    assert "unknown tool 'blur'" in pg.locator(".tool-error").nth(2).inner_text()
    fake = tmp_path / "fake.png"
    fake.write_text("not a png")
    pg.click("details summary >> text=Upload an image")
    pg.set_input_files("#upload-file", str(fake))
    pg.fill("#upload-question", "what is it?")
    assert "not an image" in error_after(lambda: pg.click("#upload"))
    notraj = tmp_path / "x.jsonl"
    notraj.write_text("hello\n")
    pg.fill("#replay-path", str(notraj))
    assert "not a trajectory file" in error_after(lambda: pg.click("#replay-open"))
    # still usable: the episode is intact and a good upload works
    assert pg.locator(".turn[data-role=tool]").count() == 3
    good = tmp_path / "good.png"
    Image.new("RGB", (320, 240), (200, 30, 30)).save(good)
    pg.set_input_files("#upload-file", str(good))
    pg.fill("#upload-answer", "red")
    pg.click("#upload")
    pg.wait_for_function("document.querySelectorAll('.turn').length == 2")
    assert "sample upload" in pg.inner_text("#status")
    # shown at the size the model sees: Qwen's rule under the default budget
    assert natural_width(pg, ".turn[data-role=user] img") == \
        QWEN2_5_VL_DEFAULT.seen_size(320, 240)[0] == 308


@pytest.mark.browser
def test_page_replays_saved_trajectory(page, tmp_path):
    s = open_session(Config())
    s.step(CROP)
    s.step(call_text("zoom", image="tool_1", bbox=[40, 40, 220, 200]))
    s.step(ANSWER)
    s.score_answer()
    path = s.save(str(tmp_path / "saved.jsonl"))
    trajectory.save([s.trajectory()], path, append=True)  # a second episode in the file
    pg = page
    pg.fill("#replay-path", str(path))
    pg.click("#replay-open")
    pg.wait_for_selector("#replay:not([hidden]) #replay-turns .turn")
    assert pg.locator("#replay-episode option").count() == 2
    assert pg.locator("#replay-turns .turn").count() == 2  # system + user first
    for _ in range(3):
        pg.click("#replay-next")
    assert pg.locator("#replay-turns .turn").count() == 5
    assert "turn 5 of 7" in pg.inner_text("#replay-step")
    crop_img = "#replay-turns .turn[data-role=tool] img"
    assert natural_width(pg, crop_img) == s.episode.traj.images[1].width
    pg.click("#replay-all")
    imgs = pg.locator("#replay-turns img")
    assert imgs.count() == 3
    assert "reward 1" in pg.inner_text("#replay-info")
    pg.click("#replay-prev")
    assert pg.locator("#replay-turns .turn").count() == 6


@pytest.mark.browser
def test_page_model_policy_shows_token_mask(page, tiny_dir):
    pg = page
    pg.select_option("#policy-mode", "model")
    pg.fill("#policy-path", tiny_dir)
    pg.click("#set-policy")
    pg.wait_for_function("document.querySelector('#status').textContent.includes('model')")
    assert pg.is_disabled("#assistant-text") and not pg.is_disabled("#run")
    pg.fill("#gen-seed", "0")
    pg.click("#step")
    pg.wait_for_selector(".turn[data-role=assistant]")
    assert "model" in pg.inner_text(".turn[data-role=assistant] header")
    # the token view: image pads as one context segment, sampled tokens as policy tokens
    assert pg.locator("#tokens .m1").count() > 0
    assert "logp" in pg.get_attribute("#tokens .m1", "title")
    assert pg.inner_text("#tokens .img-tok").startswith("<|image_pad|>")
    pg.select_option("#policy-mode", "model")
    pg.fill("#policy-path", "/nonexistent/model")
    pg.click("#set-policy")
    pg.wait_for_selector("#error:not([hidden])")
    assert "could not load a model" in pg.inner_text("#error-text")
    assert pg.locator(".turn[data-role=assistant]").count() == 1  # the episode is kept
