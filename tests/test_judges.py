"""Aesthetic judges: score parsing, the OpenAI-compatible client against a loopback server
(good, garbage, 500 then success, 400, hang, concurrency, API key), the VLM judge on a tiny
offline Qwen-VL, and the stage falling back to the metrics when a judge fails."""
from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from vlmagent.cli import build_parser
from vlmagent.config import AestheticsConfig, OpenAIJudgeConfig, VlmJudgeConfig
from vlmagent.rewards.judges import (
    JUDGES,
    Evidence,
    MetricsJudge,
    OpenAIJudge,
    Shot,
    VLMJudge,
    build_judge,
    parse_score,
)


def png(w=64, h=48, colour=(40, 90, 160)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "PNG")
    return buf.getvalue()


EV = Evidence([Shot("/index.html", "desktop", png(320, 200)),
               Shot("/index.html", "mobile", png(94, 200))], metrics_score=3.25)


@pytest.mark.parametrize("text,want", [
    ("Score: 4", 4.0), ("score 3.5/5", 3.5), ('{"score": 2}', 2.0),
    ("I'd give it 4 out of 5.", 4.0),
    ("**Rating:** 5", 5.0), ("3", 3.0), (" 4.0 ", 4.0),
    ("The layout is clean. Score: 2. On reflection, Score: 3", 3.0),  # the last one wins
    ("Score: 7", None), ("Score: -1", None), ("looks nice", None), ("", None),
    ("3 columns and 2 fonts", None), (None, None),
])
def test_parse_score(text, want):
    assert parse_score(text) == want


def test_registry_and_cli_flag():
    assert set(JUDGES) == {"metrics", "vlm", "openai"}
    assert isinstance(build_judge(AestheticsConfig()), MetricsJudge)
    with pytest.raises(ValueError, match="unknown aesthetics judge 'gpt'.*metrics, vlm, openai"):
        build_judge(AestheticsConfig(judge="gpt"))
    args, _ = build_parser().parse_known_args(["score", "x", "--out", "o", "--judge", "openai"])
    assert args.judge == "openai"
    with pytest.raises(SystemExit):
        build_parser().parse_known_args(["score", "x", "--out", "o", "--judge", "gpt"])
    v = MetricsJudge()(EV)
    assert v.score == 3.25 and v.error is None
    assert MetricsJudge()(Evidence()).score is None


# ---------------------------------------------------------------- a stand-in model server
class Server:
    """Loopback chat-completions server; `script` is a list of behaviours, one per request
    (the last one repeats): ("ok", text) | ("slow", text) (0.3 s late) | ("status", code) |
    ("hang", seconds) | ("raw", bytes)."""

    def __init__(self, script):
        self.script, self.requests, self.lock = list(script), [], threading.Lock()
        self.inflight = self.max_inflight = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append((self.path, dict(self.headers), body))
                    kind, arg = outer.script[min(len(outer.requests), len(outer.script)) - 1]
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                done = False

                def finish():  # counted as answered before the client can read the answer
                    nonlocal done
                    if not done:
                        done = True
                        with outer.lock:
                            outer.inflight -= 1

                try:
                    if kind == "hang":
                        time.sleep(arg)
                        return
                    if kind == "slow":
                        time.sleep(0.3)
                    finish()
                    if kind == "status":
                        self.send_error(arg)
                        return
                    data = arg if kind == "raw" else json.dumps(  # "ok" and "slow"
                        {"choices": [{"message": {"role": "assistant", "content": arg}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    finish()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def make(*script):
        servers.append(Server(script))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def judge(url, sleeps=None, **kw):
    cfg = OpenAIJudgeConfig(base_url=url, model="judge-1", timeout_s=kw.pop("timeout_s", 5.0),
                            backoff_s=0.01, api_key_env="VLM_TEST_KEY", **kw)
    return OpenAIJudge(cfg, sleep=(sleeps.append if sleeps is not None else time.sleep))


def test_openai_good_answer_sends_images_and_key(serve, monkeypatch):
    monkeypatch.setenv("VLM_TEST_KEY", "sk-test")
    s = serve(("ok", "Clean and readable. Score: 4"))
    v = judge(s.url)(EV)
    assert v.score == 4.0 and v.error is None and v.attempts == 1 and "Score: 4" in v.raw
    path, headers, body = s.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    content = body["messages"][0]["content"]
    assert body["model"] == "judge-1" and body["temperature"] == 0.0
    assert [c["type"] for c in content] == ["text", "image_url", "image_url"]
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_openai_garbage_is_a_recorded_failure(serve):
    s = serve(("ok", "What a lovely website!"))
    v = judge(s.url)(EV)
    assert v.score is None and "no 0-5 score" in v.error and v.raw == "What a lovely website!"
    assert len(s.requests) == 1  # deterministic output: not retried
    s2 = serve(("raw", b"<html>not json</html>"))
    v2 = judge(s2.url)(EV)
    assert v2.score is None and v2.error.startswith("malformed response")


def test_openai_retries_500_with_backoff_then_succeeds(serve):
    s = serve(("status", 500), ("status", 503), ("ok", "Score: 3"))
    sleeps: list[float] = []
    v = judge(s.url, sleeps, retries=2)(EV)
    assert v.score == 3.0 and v.attempts == 3 and len(s.requests) == 3
    assert sleeps == [pytest.approx(0.01), pytest.approx(0.02)]  # backoff_s * 2**k
    s2 = serve(("status", 500))
    v2 = judge(s2.url, [], retries=1)(EV)
    assert v2.score is None and v2.error == "HTTP 500" and v2.attempts == 2


def test_openai_client_errors_are_not_retried(serve):
    s = serve(("status", 400), ("ok", "Score: 5"))
    v = judge(s.url, [], retries=3)(EV)
    assert v.score is None and v.error == "HTTP 400" and len(s.requests) == 1


def test_openai_hang_times_out_as_a_failure(serve):
    s = serve(("hang", 5.0))
    t0 = time.monotonic()
    v = judge(s.url, [], timeout_s=0.5, retries=1)(EV)
    took = time.monotonic() - t0
    assert v.score is None and v.error == "timed out" and v.attempts == 2
    assert 0.9 < took < 3.0
    # the stage deadline caps the whole call, retries included
    t0 = time.monotonic()
    v = judge(s.url, [], timeout_s=5.0, retries=5)(EV, deadline=time.monotonic() + 0.6)
    assert v.score is None and time.monotonic() - t0 < 2.0


def test_openai_unreachable_server(serve):
    s = serve(("ok", "Score: 1"))
    url = s.url
    s.close()
    v = judge(url, [], retries=1, timeout_s=1.0)(EV)
    assert v.score is None and v.error.startswith("connection failed") and v.attempts == 2


def test_openai_concurrency_limit(serve):
    s = serve(("slow", "Score: 2"))  # every answer takes 0.3 s
    verdicts = judge(s.url, concurrency=2).judge_many([EV] * 6)
    assert [v.score for v in verdicts] == [2.0] * 6 and len(s.requests) == 6
    assert s.max_inflight == 2  # never more than the limit, and the limit is used


# ---------------------------------------------------------------- local VLM (tiny, offline)
@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from vlmagent.policy import Policy
    from vlmagent.tiny import build_tiny

    path = build_tiny(tmp_path_factory.mktemp("tiny") / "m", max_pixels=112 * 112)
    return path, Policy.from_pretrained(path)


def test_vlm_judge_on_a_tiny_model(tiny_policy):
    path, policy = tiny_policy
    cfg = VlmJudgeConfig(path=str(path), max_new_tokens=8, max_pixels=112 * 112, device="cpu")
    v = VLMJudge(cfg)(EV)  # loads the checkpoint itself; random weights: garbage text
    assert v.attempts == 1 and isinstance(v.raw, str)
    assert (v.score is None) == (v.error is not None)
    if v.score is None:
        assert "no 0-5 score" in v.error
    again = VLMJudge(cfg, policy)(EV)  # greedy decoding: same output every time
    assert again.raw == VLMJudge(cfg, policy)(EV).raw

    class Scripted:  # the real processor and prompt, a scripted answer: parsing end to end
        def __getattr__(self, name):
            return getattr(policy, name)

        def generate(self, contexts, *a, **kw):
            assert len(contexts[0].images) == 2 and len(contexts[0].token_ids) > 10
            return [type("G", (), {"text": "Score: 4.5<|im_end|>"})()]
    v = VLMJudge(cfg, Scripted())(EV)
    assert v.score == 4.5 and v.error is None


def test_vlm_judge_failures_are_recorded():
    v = VLMJudge(VlmJudgeConfig(path=""))(EV)
    assert v.score is None and "vlm.path is empty" in v.error
    v = VLMJudge(VlmJudgeConfig(path="/nonexistent/model"))(EV)
    assert v.score is None and v.error
    assert VLMJudge(VlmJudgeConfig(path="x"))(Evidence()).error == "no screenshots to judge"


# ---------------------------------------------------------------- in the stage
@pytest.mark.browser
def test_stage_uses_the_judge_and_falls_back_on_failure(serve, tmp_path):
    from vlmagent.web.browser import Browser
    from vlmagent.config import BrowserConfig
    from vlmagent.rewards import SiteContext
    from vlmagent.rewards.aesthetics import AestheticsStage
    from vlmagent.web.sitegen import write_site

    root = write_site(tmp_path / "s", {"index.html": "<!doctype html><title>t</title>"
                                       "<h1>Hello</h1><p>A small page.</p>"})
    good, bad = serve(("ok", "Score: 4")), serve(("status", 500))
    bcfg = BrowserConfig(max_pages=2)
    with Browser(bcfg) as b:
        def run(url):
            cfg = AestheticsConfig(judge="openai", openai=OpenAIJudgeConfig(
                base_url=url, retries=0, timeout_s=2.0))
            return AestheticsStage(b, cfg, bcfg)(SiteContext.from_dir(root), time.monotonic() + 30)
        ok, failed = run(good.url), run(bad.url)
    assert ok.passed and ok.score == pytest.approx(0.8) and ok.details["aesthetic_score"] == 4.0
    assert ok.details["judge"]["name"] == "openai" and ok.details["judge"]["error"] is None
    assert len(good.requests[0][2]["messages"][0]["content"]) == 3  # desktop + mobile shots
    d = failed.details
    assert d["judge"]["error"] == "HTTP 500" and d["judge"]["fallback"] == "metrics"
    assert d["aesthetic_score"] == d["metrics_score"] == ok.details["metrics_score"]
    assert failed.score == pytest.approx(d["metrics_score"] / 5, abs=1e-6)
