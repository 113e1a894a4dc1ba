"""`edgemoe serve`: an OpenAI-compatible HTTP server for one model (FastAPI + uvicorn).

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health,
GET /metrics. `stream: true` answers with server-sent events in OpenAI's chunk format, ending
with `data: [DONE]`. Requests are served one at a time (the engine holds one context); others
wait their turn. A client that disconnects mid-stream stops its generation at the next token,
which frees the engine for the next request. Bad input gets OpenAI-style JSON errors: 400
(malformed JSON or parameters, and any image that cannot be read or placed), 401 (missing or wrong API key), 404 (unknown model), 413
(prompt longer than the context).

Needs the `serve` extra: pip install "edgemoe[serve]".
"""
import asyncio
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..chat_template import load_chat_template
from ..api import CancelToken
from ..errors import Cancelled, EdgeMoEError, ImageError
from ..generate import CANCELLED, CONTEXT, LENGTH, STOP, Generation, per_token
from ..sampling import Sampler, SamplingParams
from ..session import chat_stop_ids


# The longest data: URL an image_url part may carry (about 15 MiB of image): the request is held in
# memory whole, and a device's memory is the budget's.
MAX_IMAGE_URL_CHARS = 20 << 20
# Images a request may carry: each is decoded and preprocessed as the request is read.
MAX_IMAGES = 8

# OpenAI's finish_reason for each way a generation ends ("cancelled" never reaches a client:
# it means the client went away).
FINISH_REASONS = {STOP: "stop", LENGTH: "length", CONTEXT: "length", CANCELLED: "cancelled"}


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


@dataclass
class Request:
    """A validated completion request."""
    prompt_ids: List[int]
    max_tokens: int
    params: SamplingParams
    seed: Optional[int]
    stop: List[str]
    stop_ids: set
    stream: bool
    include_usage: bool = False
    images: List[Any] = field(default_factory=list)  # preprocessed, one per run of image tokens in prompt_ids


@dataclass
class Metrics:
    requests: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_decode_tok_s: float = 0.0
    last_decode: Dict[str, float] = field(default_factory=dict)  # the engine's counters over the last decode
    draft: Dict[str, int] = field(default_factory=lambda: {"drafted": 0, "accepted": 0, "rounds": 0})  # summed
    started: float = field(default_factory=time.time)


def _number(body: Dict[str, Any], key: str, default, lo: float, hi: float, integer: bool = False):
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise APIError(400, f"'{key}' must be {'an integer' if integer else 'a number'}", param=key)
    if not lo <= value <= hi:
        raise APIError(400, f"'{key}' must be between {lo} and {hi}", param=key)
    return value


def _stops(body: Dict[str, Any]) -> List[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, "'stop' must be a non-empty string or a list of up to 4 of them", param="stop")
    return stops


class Server:
    """The model, its lock and the request logic; create_app() puts HTTP around it."""

    def __init__(self, model, model_id: str, api_key: Optional[str] = None, defaults: Optional[Dict] = None,
                 image_dir: Optional[str] = None):
        self.model, self.model_id, self.api_key = model, model_id, api_key
        # where image_url parts may name local files (None: nowhere, data: URLs only)
        self.image_dir = os.path.realpath(image_dir) if image_dir else None
        self.defaults = defaults or {}
        self.template = load_chat_template(model.tokenizer.config)
        self.lock = asyncio.Lock()
        self.metrics = Metrics()

    # ------------------------------------------------------------ validation

    def check_auth(self, header: Optional[str]) -> None:
        if self.api_key and header != f"Bearer {self.api_key}":
            raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                           kind="authentication_error")

    def _common(self, body: Dict[str, Any], prompt_ids: List[int], default_max: int, stop_ids: set) -> Request:
        model = body.get("model")
        if model is not None and model != self.model_id:
            raise APIError(404, f"the model '{model}' does not exist here (this server has '{self.model_id}')",
                           param="model", kind="not_found_error")
        if _number(body, "n", 1, 1, 1, integer=True) != 1:
            raise APIError(400, "'n' must be 1", param="n")
        room = self.model.ctx_size - len(prompt_ids)
        if room < 1:
            raise APIError(413, f"the prompt has {len(prompt_ids)} tokens; this model's context holds "
                                f"{self.model.ctx_size}", param="messages", kind="context_length_exceeded")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = default_max if max_tokens is None else _number({"max_tokens": max_tokens}, "max_tokens",
                                                                    None, 1, 1 << 30, integer=True)
        params = SamplingParams(
            temperature=_number(body, "temperature", self.defaults.get("temperature", 1.0), 0.0, 2.0),
            top_p=_number(body, "top_p", self.defaults.get("top_p", 1.0), 0.0, 1.0),
            top_k=self.defaults.get("top_k", 0), min_p=self.defaults.get("min_p", 0.0),
            repeat_penalty=self.defaults.get("repeat_penalty", 1.0))
        if params.top_p == 0.0:
            params.top_p = 1e-9
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise APIError(400, "'seed' must be an integer", param="seed")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise APIError(400, "'stream' must be a boolean", param="stream")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise APIError(400, "'stream_options' must be an object", param="stream_options")
        return Request(prompt_ids, max_tokens, params, seed, _stops(body), stop_ids, stream,
                       bool(options.get("include_usage")))

    def chat_request(self, body: Dict[str, Any]) -> Request:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list", param="messages")
        clean, images = [], []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
                raise APIError(400, "each message needs a 'role' of system, user, assistant or developer",
                               param="messages")
            content = m.get("content")
            if isinstance(content, list):  # OpenAI content parts: text, and images where the model takes them
                parts = []
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "text":
                        parts.append({"type": "text", "text": str(part.get("text", ""))})
                    elif isinstance(part, dict) and part.get("type") == "image_url":
                        if len(images) == MAX_IMAGES:
                            raise APIError(400, f"a request takes at most {MAX_IMAGES} images", param="messages")
                        images.append(self._image(part.get("image_url")))
                        parts.append({"type": "image"})
                content = parts if any(p["type"] == "image" for p in parts) else "".join(p["text"] for p in parts)
            if not isinstance(content, (str, list)):
                raise APIError(400, "message content must be a string or a list of content parts", param="messages")
            clean.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
        if images and self.template is None:
            raise APIError(400, "this model has no chat template to place images with", param="messages")
        if self.template is not None:
            ids = self.model.tokenize(self.template.render(clean, add_generation_prompt=True),
                                      add_special_tokens=False)
        else:
            ids = self.model.tokenize("\n".join(m["content"] for m in clean))
        if images:
            try:
                ids = self.model.place_images(ids, images, place_missing=False)
            except ImageError as e:
                raise APIError(400, str(e), param="messages") from None
        req = self._common(body, ids, self.defaults.get("max_tokens", 512), chat_stop_ids(self.model))
        req.images = images
        return req

    def _image(self, image_url: Any):
        """An image_url part's image, preprocessed (a 400 for anything wrong with it): a data: URL or a
        local file (file:// or a path); remote URLs are refused, a device may be offline."""
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if not isinstance(url, str) or not url:
            raise APIError(400, "an image_url part needs a 'url'", param="messages")
        if len(url) > MAX_IMAGE_URL_CHARS:
            raise APIError(400, f"an image is larger than this server takes ({MAX_IMAGE_URL_CHARS // (1 << 20)} MiB "
                                "of data URL)", param="messages")
        if not url.startswith("data:") and not url.startswith(("http://", "https://")):
            path = os.path.realpath(url[len("file://"):] if url.startswith("file://") else url)
            if self.image_dir is None or os.path.commonpath([self.image_dir, path]) != self.image_dir:
                raise APIError(400, "image_url: this server takes data: URLs, and local files only under the "
                                    "folder it was started with (--image-dir)", param="messages")
            url = path
        try:
            return self.model.prepare_image(url)
        except ImageError as e:
            raise APIError(400, str(e), param="messages") from None

    def completion_request(self, body: Dict[str, Any]) -> Request:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise APIError(400, "'prompt' must be a string", param="prompt")
        ids = self.model.tokenize(prompt)
        if not ids:
            raise APIError(400, "'prompt' is empty", param="prompt")
        return self._common(body, ids, 16, set(self.model.eos_token_ids))

    # ------------------------------------------------------------ generation

    def generate(self, req: Request, cancel: CancelToken,
                 result: Dict[str, int]) -> Iterator[Tuple[str, Optional[str]]]:
        """Text pieces, then ("", finish_reason); result["completion_tokens"] is set at the end.
        Runs in a worker thread while the lock is held. `cancel` (set when the client goes away)
        stops even a long prefill at its next layer."""
        generation = None
        try:  # the vision tower runs here, in the worker, with the engine's lock held
            images = [self.model.encode_image(image, cancel) for image in req.images]
            generation = Generation(self.model, req.prompt_ids, req.max_tokens, Sampler(req.params, req.seed),
                                    stop_ids=req.stop_ids, stop_strings=req.stop, cancel=cancel,
                                    draft=self.model.draft, images=images)
            for piece in generation:
                yield piece, None
        except Cancelled:
            pass  # the client went away; the stats say so
        if generation is None:  # it went away while its images were encoded
            self.metrics.requests += 1
            result["completion_tokens"] = 0
            yield "", FINISH_REASONS[CANCELLED]
            return
        stats = generation.stats
        self.metrics.requests += 1
        self.metrics.prompt_tokens += len(req.prompt_ids)
        self.metrics.completion_tokens += stats.generated_tokens  # a stop string's tokens included
        if stats.generated_tokens:
            self.metrics.last_decode_tok_s = stats.decode_tok_s
            self.metrics.last_decode = stats.decode_engine
        for k, v in stats.draft.items():
            self.metrics.draft[k] += v
        result["completion_tokens"] = stats.generated_tokens
        yield "", FINISH_REASONS[stats.stop_reason]

    def usage(self, req: Request, completion_tokens: int) -> Dict[str, int]:
        return {"prompt_tokens": len(req.prompt_ids), "completion_tokens": completion_tokens,
                "total_tokens": len(req.prompt_ids) + completion_tokens}

    def metrics_dict(self) -> Dict[str, Any]:
        s = self.model.stats()
        m = self.metrics
        digits = {"compute_ms": 2, "cache_ms": 3, "io_wait_ms": 2, "mb_read": 3, "cache_hit_rate": 4}
        last = {f"last_decode_{k}": None if v is None else round(v, digits[k])  # the last reply's decode, per token
                for k, v in per_token(m.last_decode).items()}
        return {"requests": m.requests, "cancelled": m.cancelled, "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens, "last_decode_tok_s": round(m.last_decode_tok_s, 2),
                **last, "draft": self.model.draft, **{f"draft_{k}": v for k, v in m.draft.items()},
                "skipped_expert_choices": s["skipped_choices"], "low_bit_expert_choices": s["low_bit_choices"],
                "cache_hit_rate": round(s["cache_hit_rate"], 4), "bytes_read": s["bytes_read"],
                "rss_bytes": s.get("rss_bytes"), "uptime_s": round(time.time() - m.started, 1),
                "memory_plan_bytes": self.model.plan.total_bytes}


def create_app(server: Server):
    from fastapi import FastAPI, Request as HTTPRequest
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="edgemoe", docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def api_error(_: HTTPRequest, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(EdgeMoEError)
    async def engine_error(_: HTTPRequest, e: EdgeMoEError):
        return JSONResponse(APIError(500, f"the engine failed: {e}", kind="server_error").body(), status_code=500)

    async def parse(request: HTTPRequest) -> Dict[str, Any]:
        server.check_auth(request.headers.get("authorization"))
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body

    async def run(request: HTTPRequest, req: Request, chat: bool):
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"

        def choice(text: str, finish: Optional[str], delta: bool, first: bool = False) -> Dict[str, Any]:
            if chat:
                content = {"role": "assistant", "content": text} if (first or not delta) else {"content": text}
                if delta and finish is not None:
                    content = {}
                return {"index": 0, ("delta" if delta else "message"): content, "finish_reason": finish,
                        "logprobs": None}
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

        await server.lock.acquire()  # one request in the engine at a time; the rest wait here
        cancel = CancelToken()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        result: Dict[str, int] = {"completion_tokens": 0}

        def worker():
            try:
                for item in server.generate(req, cancel, result):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as e:  # surfaces in the handler
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)
                # The engine is free once generation has returned. Released from here, not from
                # the HTTP task: a client that went away gets its task cancelled, and a cancelled
                # task cannot be relied on to await anything more.
                loop.call_soon_threadsafe(server.lock.release)

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()

        async def items():
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancel.cancel()  # stops generation at the next layer if it is still running

        if not req.stream:
            text, finish = "", "length"
            async for piece, end in items():
                text += piece
                finish = end or finish
            return JSONResponse({"id": rid, "object": obj, "created": created, "model": server.model_id,
                                 "choices": [choice(text, finish, delta=False)],
                                 "usage": server.usage(req, result["completion_tokens"])})

        async def events():
            first = True
            try:
                async for piece, end in items():
                    if await request.is_disconnected():
                        server.metrics.cancelled += 1
                        return
                    if end is None:
                        chunk = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                                 "model": server.model_id, "choices": [choice(piece, None, True, first)]}
                        first = False
                        yield f"data: {json.dumps(chunk)}\n\n"
                    else:
                        finish = "stop" if end == "cancelled" else end
                        chunk = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                                 "model": server.model_id, "choices": [choice("", finish, True)]}
                        yield f"data: {json.dumps(chunk)}\n\n"
                        if req.include_usage:
                            chunk = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                                     "model": server.model_id, "choices": [],
                                     "usage": server.usage(req, result["completion_tokens"])}
                            yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                cancel.cancel()  # the client left (the task is cancelled) or the stream ended

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: HTTPRequest):
        return await run(request, server.chat_request(await parse(request)), chat=True)

    @app.post("/v1/completions")
    async def completions(request: HTTPRequest):
        return await run(request, server.completion_request(await parse(request)), chat=False)

    @app.get("/v1/models")
    async def models(request: HTTPRequest):
        server.check_auth(request.headers.get("authorization"))
        return {"object": "list", "data": [{"id": server.model_id, "object": "model",
                                            "created": int(server.metrics.started), "owned_by": "edgemoe"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": server.model_id, "busy": server.lock.locked(),
                "metrics": server.metrics_dict()}

    @app.get("/metrics")
    async def metrics():
        return server.metrics_dict()

    return app
