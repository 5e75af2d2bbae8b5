"""LoopbackServer: a TEST STAND-IN for vLLM / SGLang, NOT an inference engine.

It runs the tiny in-process Policy on CPU behind a stdlib HTTP server on 127.0.0.1, speaking
the request and reply shapes ServerActor sends to the real servers, so the client, the wire
formats, weight sync and the log-prob bookkeeping are tested end to end without a GPU:

    POST /generate                      SGLang native (input_ids, image_data, sampling_params)
    POST /v1/completions                vLLM completions with a token-id prompt (text only)
    POST /load_lora_adapter, /v1/...    {lora_name, lora_path}: a peft adapter folder
    POST /unload_lora_adapter, /v1/...  {lora_name}
    POST /update_weights_from_disk      {model_path}: full weights (SGLang's endpoint)
    GET  /health

Requests are served one at a time under a lock (one model, one adapter selection at a time);
each generation is Policy.generate on a batch of one, so with the same seed it draws what
PolicyActor draws for a single episode.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from vlmagent.modelio import is_peft
from vlmagent.policy import Context


def decode_image(item: str) -> Image.Image:
    data = item.split(",", 1)[1] if item.startswith("data:") else item
    im = Image.open(io.BytesIO(base64.b64decode(data)))
    im.load()
    return im.convert("RGB")


class LoopbackServer:
    """TEST STAND-IN (tiny model, CPU). `with LoopbackServer(policy) as srv: srv.url`."""

    def __init__(self, policy: Any, model_name: str = "tiny", host: str = "127.0.0.1",
                 port: int = 0):
        self.policy = policy
        self.model_name = model_name
        self.adapters: dict[str, str] = {}  # loaded adapter name -> folder
        self.log: list[tuple[str, dict[str, Any]]] = []  # (path, body) of every request
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ routes
    def route(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.log.append((path, body))
        with self._lock:
            if path == "/generate":
                return self._sglang(body)
            if path == "/v1/completions":
                return self._vllm(body)
            if path in ("/load_lora_adapter", "/v1/load_lora_adapter"):
                return self._load(body["lora_name"], body["lora_path"])
            if path in ("/unload_lora_adapter", "/v1/unload_lora_adapter"):
                return self._unload(body["lora_name"])
            if path == "/update_weights_from_disk":
                return self._load_full(body["model_path"])
        raise KeyError(path)

    def _adapter(self, name: str | None) -> Any:
        """Select the adapter `name` (None or the base's name: adapters off)."""
        model = self.policy.model
        if name in (None, "", self.model_name):
            return model.disable_adapter() if is_peft(model) else contextlib.nullcontext()
        if name not in self.adapters:
            raise ValueError(f"adapter {name!r} is not loaded (loaded: {sorted(self.adapters)})")
        model.set_adapter(name)
        return contextlib.nullcontext()

    def _generate(self, ids: list[int], images: list[Image.Image], max_new: int, temperature: float,
                  top_p: float, stop: list[str], seed: int | None, adapter: str | None) -> Any:
        with self._adapter(adapter):
            [g] = self.policy.generate([Context(list(ids), images, "loopback")], max_new,
                                       temperature=temperature, top_p=top_p,
                                       stop_strings=tuple(stop), seed=seed)
        return g

    def _sglang(self, body: dict[str, Any]) -> dict[str, Any]:
        sp = body.get("sampling_params") or {}
        ids = body["input_ids"]
        images = [decode_image(x) for x in body.get("image_data") or []]
        g = self._generate(ids, images, sp.get("max_new_tokens", 128), sp.get("temperature", 1.0),
                           sp.get("top_p", 1.0), sp.get("stop") or [], sp.get("sampling_seed"),
                           body.get("lora_path"))
        if g.stop == "length":
            finish = {"type": "length", "length": len(g.token_ids)}
        else:
            finish = {"type": "stop", "matched": g.token_ids[-1] if g.stop == "eos" else g.stop}
        rows = [[lp, t, None] for t, lp in zip(g.token_ids, g.logps)]
        return {"text": g.text, "meta_info": {
            "output_token_logprobs": rows if body.get("return_logprob") else None,
            "finish_reason": finish, "prompt_tokens": len(ids),
            "completion_tokens": len(g.token_ids)}}

    def _vllm(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["prompt"]
        if not (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)):
            raise ValueError("this stand-in takes one token-id prompt (a list of ints)")
        stop = body.get("stop") or []
        g = self._generate(prompt, [], body.get("max_tokens", 16), body.get("temperature", 1.0),
                           body.get("top_p", 1.0), [stop] if isinstance(stop, str) else stop,
                           body.get("seed"), body.get("model"))
        logprobs = None
        if body.get("logprobs") is not None:
            toks = [f"token_id:{t}" if body.get("return_tokens_as_token_ids")
                    else self.policy.decode([t]) for t in g.token_ids]
            logprobs = {"tokens": toks, "token_logprobs": g.logps}
        return {"object": "text_completion", "model": body.get("model"), "choices": [{
            "index": 0, "text": g.text, "logprobs": logprobs,
            "finish_reason": "length" if g.stop == "length" else "stop",
            "stop_reason": None if g.stop in ("eos", "length") else g.stop}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(g.token_ids)}}

    def _load(self, name: str, path: str) -> dict[str, Any]:
        from peft import PeftModel

        if name in self.adapters:  # vLLM refuses a name that is loaded; so does this
            raise ValueError(f"adapter {name!r} is already loaded")
        if is_peft(self.policy.model):
            self.policy.model.load_adapter(path, adapter_name=name)
        else:
            self.policy.model = PeftModel.from_pretrained(self.policy.model, path,
                                                          adapter_name=name)
        self.policy.model.eval()
        self.adapters[name] = path
        return {"success": True, "message": f"LoRA adapter {name!r} added"}

    def _unload(self, name: str) -> dict[str, Any]:
        if name not in self.adapters:
            raise ValueError(f"adapter {name!r} is not loaded")
        self.policy.model.delete_adapter(name)
        del self.adapters[name]
        return {"success": True, "message": f"LoRA adapter {name!r} removed"}

    def _load_full(self, path: str) -> dict[str, Any]:
        from transformers import AutoModelForImageTextToText

        new = AutoModelForImageTextToText.from_pretrained(path, dtype=self.policy.core.dtype)
        self.policy.core.load_state_dict(new.state_dict())
        return {"success": True, "message": f"weights loaded from {path}"}

    # ------------------------------------------------------------ HTTP
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: tests read the log list
                pass

            def _reply(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/health":
                    self._reply(200, {"status": "ok", "stand_in": "loopback tiny model, CPU"})
                else:
                    self._reply(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                    self._reply(200, server.route(self.path, body))
                except KeyError as e:
                    self._reply(404 if str(e).strip("'") == self.path else 400,
                                {"error": {"message": f"no route or missing field {e}"}})
                except ValueError as e:
                    self._reply(400, {"error": {"message": str(e)}})
                except Exception as e:  # a server error, as a real one would answer it
                    self._reply(500, {"error": {"message": f"{type(e).__name__}: {e}"}})

        return Handler
