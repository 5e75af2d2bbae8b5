"""ServerActor: the agent's assistant turns sampled by an inference server (SGLang, vLLM).

    actor = ServerActor(policy, cfg.rollout)           # policy: tokenizer, eos ids, decode
    trajs = agent.rollout(policy, samples, cfg.agent, actor=actor, seed=0)

Each request carries the episode's EXACT token ids (prompt, image pad runs already expanded,
tool turns); nothing is re-tokenised or re-templated on the server. What comes back is the
sampled token ids and the log-prob of each, log_softmax(logits / temperature) as PolicyActor
returns them. Stop handling is re-derived here from the ids with Policy.generate's rule
(eos, or the token that completes a stop string), so an episode built through a server has
the same shape as one built in-process.

Request shapes (WIRES):

sglang  POST {base}/generate {input_ids, image_data: [data-URL PNG at the seen size],
        sampling_params: {max_new_tokens, temperature, top_p, stop, sampling_seed,
        skip_special_tokens: false, no_stop_trim: true}, return_logprob: true, lora_path}
        -> meta_info.output_token_logprobs [[logp, id, text], ...]. SGLang's native API (the
        one slime uses for multi-turn VLM rollouts); its logprobs are post-temperature unless
        SGLANG_RETURN_ORIGINAL_LOGPROB is set; the seed is honoured only under
        --enable-deterministic-inference.
vllm    POST {base}/v1/completions {model, prompt: [ids], max_tokens, temperature, top_p,
        stop, seed, logprobs: 0, return_tokens_as_token_ids: true, skip_special_tokens: false,
        include_stop_str_in_output: true} -> choices[0].logprobs {tokens: ["token_id:N"],
        token_logprobs}. TEXT ONLY: vLLM's completions endpoint has no image field for a
        token-id prompt, so an episode with images raises here (use wire sglang). Start vLLM
        with --logprobs-mode processed_logprobs (>= 0.10.2): its default reports the
        pre-temperature distribution.

Requests of one round run in a thread pool (rollout.max_concurrency), each with a timeout and
retries (timeouts, connection errors, 429, 5xx) with exponential backoff; a failure names the
URL, the status and the server's message.
"""
from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from vlmagent.config import AgentConfig, RolloutConfig
from vlmagent.policy import Context, Generation

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
SEED_STRIDE = 104_729  # episode i of a round samples with seed + i * stride (i = 0: the seed)


class ServerError(RuntimeError):
    """A request the server did not answer usefully, after the retries."""


# ---------------------------------------------------------------- wire formats
def png_data_url(im: Image.Image) -> str:
    """Lossless: the server sees the very pixels (at the very size) the trainer sees."""
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _sglang_request(ctx: Context, p: dict[str, Any], adapter: str | None,
                    model: str) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {
        "input_ids": list(ctx.token_ids),
        "sampling_params": {"max_new_tokens": p["max_new_tokens"],
                            "temperature": p["temperature"], "top_p": p["top_p"],
                            "stop": list(p["stop"]), "skip_special_tokens": False,
                            "no_stop_trim": True},
        "return_logprob": True,
    }
    if p["seed"] is not None:
        body["sampling_params"]["sampling_seed"] = p["seed"]
    if ctx.images:
        body["image_data"] = [png_data_url(im) for im in ctx.images]
    if adapter:
        body["lora_path"] = adapter  # SGLang selects a loaded adapter by its name here
    return "/generate", body


def _sglang_parse(resp: dict[str, Any], ctx: Context) -> tuple[list[int], list[float]]:
    meta = resp.get("meta_info") or {}
    rows = meta.get("output_token_logprobs")
    if rows is None:
        raise ServerError("SGLang reply has no meta_info.output_token_logprobs "
                          "(was return_logprob dropped?)")
    prompt = meta.get("prompt_tokens")
    if prompt is not None and prompt != len(ctx.token_ids):
        # the server re-expanded the image pads (or re-tokenised): its episode is not ours
        raise ServerError(f"SGLang counted {prompt} prompt tokens for {len(ctx.token_ids)} "
                          "sent: it changed the token ids (image placeholders expanded again?)")
    return [int(r[1]) for r in rows], [float(r[0]) for r in rows]


def _vllm_request(ctx: Context, p: dict[str, Any], adapter: str | None,
                  model: str) -> tuple[str, dict[str, Any]]:
    if ctx.images:
        raise ValueError(f"episode {ctx.id}: the vllm wire (/v1/completions) takes token ids but "
                         "no images; use rollout.wire: sglang for image episodes "
                         "(docs/rollout_server.md)")
    body: dict[str, Any] = {
        "model": adapter or model, "prompt": list(ctx.token_ids),
        "max_tokens": p["max_new_tokens"], "temperature": p["temperature"], "top_p": p["top_p"],
        "stop": list(p["stop"]), "logprobs": 0, "return_tokens_as_token_ids": True,
        "skip_special_tokens": False, "include_stop_str_in_output": True,
    }
    if p["seed"] is not None:
        body["seed"] = p["seed"]
    return "/v1/completions", body


def _vllm_parse(resp: dict[str, Any], ctx: Context) -> tuple[list[int], list[float]]:
    try:
        lp = resp["choices"][0]["logprobs"]
        tokens, logps = lp["tokens"], lp["token_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise ServerError("vLLM reply has no choices[0].logprobs.tokens / token_logprobs") from None
    bad = [t for t in tokens if not str(t).startswith("token_id:")]
    if bad:
        raise ServerError(f"vLLM returned token strings {bad[:3]}, not 'token_id:N' "
                          "(return_tokens_as_token_ids unsupported by this version?)")
    return [int(str(t).split(":", 1)[1]) for t in tokens], [float(x) for x in logps]


# wire -> (request, parse, load-adapter path, unload-adapter path)
WIRES: dict[str, tuple[Callable, Callable, str, str]] = {
    "sglang": (_sglang_request, _sglang_parse, "/load_lora_adapter", "/unload_lora_adapter"),
    "vllm": (_vllm_request, _vllm_parse, "/v1/load_lora_adapter", "/v1/unload_lora_adapter"),
}


# ---------------------------------------------------------------- HTTP
class ServerClient:
    """JSON over HTTP (stdlib urllib) with timeouts and retries."""

    def __init__(self, cfg: RolloutConfig, sleep: Callable[[float], None] = time.sleep):
        if cfg.wire not in WIRES:
            raise ValueError(f"rollout.wire {cfg.wire!r} (valid: {', '.join(WIRES)})")
        if not cfg.base_url.startswith(("http://", "https://")):
            raise ValueError(f"rollout.base_url {cfg.base_url!r} is not an http(s) URL")
        self.cfg = cfg
        self.base = cfg.base_url.rstrip("/")
        self._sleep = sleep

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env, "") if self.cfg.api_key_env else ""
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        """POST JSON; the decoded JSON reply (or its text when it is not JSON)."""
        url = self.base + path
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                self._sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
            req = urllib.request.Request(url, data=data, headers=self.headers(), method="POST")
            try:
                with urllib.request.urlopen(req, timeout=timeout or self.cfg.timeout_s) as r:
                    text = r.read().decode("utf-8", "replace")
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    return text
            except urllib.error.HTTPError as e:
                msg = e.read().decode("utf-8", "replace")[:500]
                last = f"HTTP {e.code}: {msg}"
                if e.code not in RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        raise ServerError(f"POST {url} failed after {attempt + 1} attempt(s): {last}")

    def admin(self, path: str, body: dict[str, Any]) -> Any:
        """A control request (adapter load, weight reload): a reply with success false fails."""
        out = self.post(path, body)
        if isinstance(out, dict) and out.get("success") is False:
            raise ServerError(f"POST {self.base}{path}: {out.get('message', out)}")
        return out

    def load_lora(self, name: str, path: str) -> None:
        self.admin(WIRES[self.cfg.wire][2], {"lora_name": name, "lora_path": str(path)})

    def unload_lora(self, name: str) -> None:
        self.admin(WIRES[self.cfg.wire][3], {"lora_name": name})

    def load_full(self, path: str) -> None:
        """Full weights from a folder (SGLang's /update_weights_from_disk; vLLM has no such
        HTTP endpoint: weights there move by NCCL, see docs/rollout_server.md)."""
        if self.cfg.wire != "sglang":
            raise ValueError("rollout.weight_sync full needs wire sglang "
                             "(/update_weights_from_disk); vLLM has no HTTP weight reload")
        self.admin("/update_weights_from_disk", {"model_path": str(path)})


# ---------------------------------------------------------------- the actor
def to_generation(policy: Any, ids: list[int], logps: list[float], stop_strings: tuple[str, ...],
                  max_new_tokens: int) -> Generation:
    """The server's sample as Policy.generate would have ended it: at the first eos, at the
    token that completes a stop string, or after max_new_tokens. A sampled image/video pad
    token (the in-process sampler bans them; a server may not) ends the turn before it, as
    "length", so the episode never holds a pad run without its image."""
    if len(ids) != len(logps):
        raise ServerError(f"server returned {len(ids)} token ids but {len(logps)} logprobs")
    banned = {policy.image_token_id, policy.video_token_id}
    tail = max((len(s.encode()) for s in stop_strings), default=0) + 2
    out, lps, stop = [], [], None
    for t, p in zip(ids, logps):
        if t in banned or len(out) >= max_new_tokens:
            break
        out.append(t)
        lps.append(p)
        if t in policy.eos_ids:
            stop = "eos"
        elif stop_strings:
            text = policy.tokenizer.decode(out[-tail:], skip_special_tokens=False)
            stop = next((s for s in stop_strings if s in text), None)
        if stop is not None:
            break
    body = out[:-1] if stop == "eos" else out
    return Generation(out, lps, policy.decode(body), stop or "length")


class ServerActor:
    """Writes every episode's next assistant turn through an inference server (module doc)."""

    scripted = False

    def __init__(self, policy: Any, cfg: RolloutConfig, client: ServerClient | None = None):
        self.policy = policy
        self.cfg = cfg
        self.client = client or ServerClient(cfg)
        self.adapter: str | None = None  # the loaded LoRA adapter requests use; None: base
        self.requests = 0  # answered generation requests, for logs and tests

    def params(self, cfg: AgentConfig, stop: str, seed: int | None) -> dict[str, Any]:
        return {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                "top_p": cfg.top_p, "stop": (stop,) if stop else (), "seed": seed}

    def generate(self, ctx: Context, params: dict[str, Any]) -> Generation:
        build, parse, _, _ = WIRES[self.cfg.wire]
        path, body = build(ctx, params, self.adapter, self.cfg.model)
        resp = self.client.post(path, body)
        if not isinstance(resp, dict):
            raise ServerError(f"POST {self.client.base}{path}: reply is not JSON: {resp[:200]!r}")
        ids, logps = parse(resp, ctx)
        self.requests += 1
        return to_generation(self.policy, ids, logps, tuple(params["stop"]),
                             params["max_new_tokens"])

    def __call__(self, episodes: list[Any], cfg: AgentConfig, stop: str,
                 seed: int | None) -> list[Generation]:
        base = self.params(cfg, stop, seed)

        def one(job: tuple[int, Any]) -> Generation:
            i, e = job
            p = dict(base, seed=None if seed is None else (seed + i * SEED_STRIDE) % 2 ** 31)
            return self.generate(e.context(), p)

        jobs = list(enumerate(episodes))
        if len(jobs) <= 1:
            return [one(j) for j in jobs]
        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), self.cfg.max_concurrency))) \
                as pool:
            return list(pool.map(one, jobs))
