"""Aesthetic judges: score parsing, the OpenAI-compatible client against a loopback server
(good, garbage, 500 then success with jittered backoff, 400, 429/503 with Retry-After,
keep-alive and reconnecting, a proxy, hang, concurrency, API key), the VLM judge on a tiny
offline Qwen-VL, and the stage falling back to the metrics when a judge fails."""
from __future__ import annotations

import email.utils
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from vlmagent.cli import build_parser
from vlmagent.config import AestheticsConfig, OpenAIJudgeConfig, VlmJudgeConfig
from vlmagent.rewards.judges import (
    JITTER,
    JUDGES,
    Evidence,
    MetricsJudge,
    OpenAIJudge,
    Shot,
    VLMJudge,
    build_judge,
    parse_score,
    retry_after_s,
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
    """Loopback chat-completions server speaking HTTP/1.1 (keep-alive); `script` is a list of
    behaviours, one per request (the last one repeats): ("ok", text) | ("slow", text) (0.3 s
    late) | ("close", text) (answers, then closes the connection without saying so, as an idle
    timeout would) | ("status", code) (an error page, then Connection: close) | ("retry", (code,
    Retry-After value)) (kept alive) | ("hang", seconds) | ("raw", bytes). It counts the TCP
    connections it accepts and stamps each request's arrival (time.monotonic())."""

    def __init__(self, script):
        self.script, self.requests, self.lock = list(script), [], threading.Lock()
        self.arrivals: list[float] = []
        self.inflight = self.max_inflight = self.connections = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.arrivals.append(time.monotonic())
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
                        self.close_connection = True
                        return
                    if kind == "slow":
                        time.sleep(0.3)
                    finish()
                    if kind == "status":
                        self.send_error(arg)
                        return
                    if kind == "retry":
                        self.send_response(arg[0])
                        self.send_header("Retry-After", arg[1])
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    data = arg if kind == "raw" else json.dumps(  # "ok", "slow" and "close"
                        {"choices": [{"message": {"role": "assistant", "content": arg}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    if kind == "close":
                        self.close_connection = True
                finally:
                    finish()

            def log_message(self, *a):
                pass

        class Httpd(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                req = super().get_request()
                with outer.lock:
                    outer.connections += 1
                return req

        self.httpd = Httpd(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
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


def judge(url, sleeps=None, rand=None, **kw):
    cfg = OpenAIJudgeConfig(base_url=url, model="judge-1", timeout_s=kw.pop("timeout_s", 5.0),
                            backoff_s=kw.pop("backoff_s", 0.01), api_key_env="VLM_TEST_KEY",
                            **kw)
    return OpenAIJudge(cfg, sleep=(sleeps.append if sleeps is not None else time.sleep),
                       **({"rand": rand} if rand else {}))


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
    v3 = judge("localhost:8000/v1")(EV)  # no scheme: said so, nothing sent
    assert v3.score is None and "not an http(s) URL" in v3.error and v3.attempts == 0


def test_openai_retries_500_with_jittered_backoff_then_succeeds(serve):
    s = serve(("status", 500), ("status", 503), ("ok", "Score: 3"))
    sleeps: list[float] = []
    v = judge(s.url, sleeps, rand=lambda: 0.0, retries=2)(EV)
    assert v.score == 3.0 and v.attempts == 3 and len(s.requests) == 3
    assert sleeps == [pytest.approx(0.01), pytest.approx(0.02)]  # backoff_s * 2**k
    sleeps.clear()
    s = serve(("status", 502), ("status", 500), ("ok", "Score: 3"))
    v = judge(s.url, sleeps, rand=lambda: 0.999, retries=2)(EV)  # at most 1 + JITTER times that
    assert v.score == 3.0 and v.attempts == 3
    assert sleeps == [pytest.approx(0.01 * (1 + JITTER), rel=1e-2),
                      pytest.approx(0.02 * (1 + JITTER), rel=1e-2)]
    waits = [judge(s.url, backoff_s=1.0).backoff(2) for _ in range(50)]  # the real jitter
    assert all(4.0 <= w < 4.0 * (1 + JITTER) for w in waits) and len(set(waits)) > 1
    s2 = serve(("status", 500))
    v2 = judge(s2.url, [], retries=1)(EV)
    assert v2.score is None and v2.error == "HTTP 500" and v2.attempts == 2


def test_openai_client_errors_are_not_retried(serve):
    s = serve(("status", 400), ("ok", "Score: 5"))
    v = judge(s.url, [], retries=3)(EV)
    assert v.score is None and v.error == "HTTP 400" and len(s.requests) == 1


def test_openai_429_waits_for_retry_after(serve):
    """The measured gap between the 429 and the retry is at least what the server asked for, and
    at most that plus one request's time (timeout_s): the backoff (10 ms) is the shorter wait."""
    ask = 1.0
    s = serve(("retry", (429, f"{ask:g}")), ("ok", "Score: 3"))
    j = judge(s.url, timeout_s=2.0, retries=2)
    v = j(EV)
    assert v.score == 3.0 and v.attempts == 2 and len(s.requests) == 2
    gap = s.arrivals[1] - s.arrivals[0]
    assert ask <= gap < ask + j.cfg.timeout_s, gap


@pytest.mark.parametrize("code,header,want", [
    (429, "7", 7.0), (503, "2.5", 2.5), (503, "http-date", 30.0),
    (429, "soon", 0.01), (500, "7", 0.01),  # unreadable, or not a 429/503: the backoff
])
def test_openai_retry_after_forms(serve, code, header, want):
    if header == "http-date":
        header = email.utils.formatdate(time.time() + want, usegmt=True)
    s = serve(("retry", (code, header)), ("ok", "Score: 2"))
    sleeps: list[float] = []
    v = judge(s.url, sleeps, rand=lambda: 0.0, timeout_s=60.0)(EV)
    assert v.score == 2.0 and v.attempts == 2 and len(sleeps) == 1
    assert sleeps[0] == pytest.approx(want, abs=1.5 if want == 30.0 else 1e-6)  # date: seconds


def test_openai_retry_after_past_the_deadline_ends_the_call(serve):
    s = serve(("retry", (429, "3600")))
    sleeps: list[float] = []
    v = judge(s.url, sleeps, timeout_s=60.0)(EV)  # longer than timeout_s: no use waiting
    assert v.score is None and v.attempts == 1 and sleeps == [] and len(s.requests) == 1
    assert v.error.startswith("HTTP 429 (Retry-After 3600.0 s")
    v = judge(s.url, sleeps, timeout_s=60.0)(EV, deadline=time.monotonic() + 10)
    assert v.attempts == 1 and sleeps == [] and "may wait" in v.error
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now
    assert retry_after_s(None) is None and retry_after_s("-3") is None


def test_openai_sequential_calls_share_one_connection(serve):
    s = serve(("ok", "Score: 4"))
    j = judge(s.url)
    n = 5
    assert [j(EV).score for _ in range(n)] == [4.0] * n
    assert len(s.requests) == n and s.connections == 1  # keep-alive: one TCP connection
    s2 = serve(("status", 500), ("ok", "Score: 4"))  # an error page closes its connection
    v = judge(s2.url, [], retries=1)(EV)
    assert v.score == 4.0 and v.attempts == 2 and s2.connections == 2


def test_openai_reopens_a_connection_the_server_closed(serve):
    s = serve(("close", "Score: 1"), ("close", "Score: 2"), ("ok", "Score: 3"))
    j = judge(s.url, [], retries=0)  # the resend on a new connection is not a retry
    assert [j(EV).score for _ in range(3)] == [1.0, 2.0, 3.0]
    assert s.connections == 3 and len(s.requests) == 3


def test_openai_goes_through_an_http_proxy(serve, monkeypatch):
    proxy = serve(("ok", "Score: 5"))  # a forward proxy sees the absolute URL
    monkeypatch.setenv("http_proxy", proxy.url.rsplit("/", 1)[0])
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    v = judge("http://judge.invalid:8000/v1")(EV)
    assert v.score == 5.0 and proxy.requests[0][0] == "http://judge.invalid:8000/v1/chat/completions"
    assert proxy.requests[0][1]["Host"] == "judge.invalid:8000"


def test_openai_hang_times_out_as_a_failure(serve):
    hang = 30.0  # far longer than any timeout below: a client that waits it out fails
    s = serve(("hang", hang))
    j = judge(s.url, [], timeout_s=1.0, retries=1)
    t0 = time.monotonic()
    v = j(EV)
    took = time.monotonic() - t0
    assert v.score is None and v.error == "timed out" and v.attempts == 2
    attempts = j.cfg.retries + 1  # each waits its whole timeout_s; the backoff sleep is recorded
    assert attempts * j.cfg.timeout_s - 0.05 <= took < (attempts + 1) * j.cfg.timeout_s, took
    # the stage deadline caps the whole call, retries included: well before one timeout_s
    j = judge(s.url, [], timeout_s=hang / 3, retries=5)
    t0 = time.monotonic()
    v = j(EV, deadline=time.monotonic() + 0.6)
    took = time.monotonic() - t0
    assert v.score is None and 0.6 - 0.05 <= took < j.cfg.timeout_s, took


def test_openai_unreachable_server(serve):
    s = serve(("ok", "Score: 1"))
    url = s.url
    s.close()
    v = judge(url, [], retries=1, timeout_s=1.0)(EV)
    assert v.score is None and v.error.startswith("connection failed") and v.attempts == 2


def test_openai_concurrency_limit(serve):
    s = serve(("slow", "Score: 2"))  # every answer takes 0.3 s
    j = judge(s.url, concurrency=2)
    with ThreadPoolExecutor(6) as pool:  # six threads share one judge (and its limit)
        verdicts = list(pool.map(lambda ev: j(ev), [EV] * 6))
    assert [v.score for v in verdicts] == [2.0] * 6 and len(s.requests) == 6
    assert s.max_inflight == 2  # never more than the limit, and the limit is used


# ---------------------------------------------------------------- local VLM (tiny, offline)
@pytest.fixture(scope="module")
def tiny_policy(tiny_factory):
    from vlmagent.policy import Policy

    path = tiny_factory(max_pixels=112 * 112)  # built once per session, read-only
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
    from vlmagent.config import BrowserConfig
    from vlmagent.rewards import SiteContext
    from vlmagent.rewards.aesthetics import AestheticsStage
    from vlmagent.web.browser import Browser
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
