"""An OpenAI- and Anthropic-compatible inference server, for the local cluster's Pods.

A real fleet behind a headless Service (vLLM, TGI, llama.cpp) speaks OpenAI's HTTP API, some
Anthropic's too. This app speaks both, in their wire format, so that the real ``openai`` and
``anthropic`` SDKs parse its answers, streamed and not:

- ``GET /v1/models`` and ``GET /v1/models/{id}``;
- ``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI; ``"stream": true`` sends
  server-sent events, ``data: {...}`` chunks then ``data: [DONE]``; ``stream_options``'s
  ``include_usage`` adds the usage chunk);
- ``POST /v1/messages`` (Anthropic; streamed as its named events, ``message_start`` …
  ``message_stop``);
- ``GET /healthz``: ``ok``.

A generation's answer carries an ORCA load report when its request asks for one
(``endpoint-load-metrics-format: TEXT`` or ``JSON``), in vLLM's named-metric style:
``num_requests_running`` (generations in progress, this one included) and
``num_requests_waiting`` (0: this app queues nothing). ``headlesslb.testing._inference_model``
models an engine's queue, prefix cache and timing for benchmarks.

The "model" is deterministic: a completion of ``n`` tokens is the Pod's name (``"llm-0:"``)
then the prompt's words in turn, one a token (``" say" " hello" " say" …``). So every answer
names the Pod that served it, in its text and in the ``x-pod`` header. ``n`` is the request's
``tokens`` (this app's own field, sent with the SDKs' ``extra_body``), else the app's default,
capped by the request's ``max_tokens`` (``max_completion_tokens`` in chat), as a model stops at
the limit (``finish_reason`` ``"length"``, ``stop_reason`` ``"max_tokens"``). Each token takes
``token_delay`` seconds (the request's, else the app's), streamed or not, so a stream can be
made as long as a test needs. Generation stops when the client goes away.

Serve it on a workload's Pods by its factory::

    cluster.add_deployment("llm", 3, app="headlesslb.testing:inference_app", factory=True)

or build your own factory around :class:`InferenceApp` for other defaults.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.validate import count, number
from ._apps import PodContext

if TYPE_CHECKING:  # it imports this module for its app factory
    from ._inference_model import Engine, EngineSequence

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MODEL = "headlesslb-echo"
"""The model every Pod lists (any model name is served: the output does not depend on it)."""

_MAX_TOKENS = 100_000
"""The most tokens one completion may have (an SDK's typo should not stream for hours)."""
_MAX_DELAY = 60.0
"""The longest ``token_delay``, seconds."""
_MAX_BODY = 8 * 1024 * 1024
"""The largest request body read, bytes."""


class _BadRequest(Exception):
    """A request the app refuses with 400 (or ``status``), in the API's own error format."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True, slots=True)
class _Generation:
    """What one request asks the model for, checked."""

    model: str
    tokens: list[str]
    """The completion, token by token; their concatenation is its text."""
    finish: str
    """``"stop"`` or ``"length"`` (OpenAI's words; Anthropic's are mapped from them)."""
    prompt_tokens: int
    delay: float
    stream: bool
    include_usage: bool
    session: str = ""
    """The conversation (``x-session-id`` header, else the body's ``user``): what an engine's
    prefix cache is keyed by."""


class InferenceApp:
    """One Pod's OpenAI- and Anthropic-compatible inference server (an ASGI 3 app).

    ``pod`` names the Pod in every answer; ``tokens`` is a completion's length when the request
    does not say (``tokens`` in its body), ``token_delay`` the seconds each token takes when it
    does not say either; ``models`` are what ``GET /v1/models`` lists. With an ``engine``
    (:class:`~headlesslb.testing._inference_model.Engine`, the timing model of an inference
    engine) the engine paces the tokens instead, its prefix cache's hits are in the usage
    (``prompt_tokens_details.cached_tokens``), its load is what the reports say, and
    ``GET /stats``, ``POST /reset`` and ``POST /reset-stats`` read and clear its counters.
    """

    def __init__(
        self,
        pod: str,
        *,
        tokens: int = 16,
        token_delay: float = 0.0,
        models: Sequence[str] = (DEFAULT_MODEL,),
        engine: Engine | None = None,
    ) -> None:
        # ConfigurationError (a ValueError) for a bad default; a bad request field gets a 400.
        self.pod = pod
        self.tokens = count("InferenceApp.tokens", tokens, min=1, max=_MAX_TOKENS)
        self.token_delay = float(
            number("InferenceApp.token_delay", token_delay, min=0, max=_MAX_DELAY)
        )
        self.models = list(models)
        self._ids = itertools.count(1)
        self._running = 0
        """Generations in progress: what a load report says (``num_requests_running``)."""
        self.engine = engine

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope (``http``; ``lifespan`` is acknowledged)."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"].rstrip("/") or "/"
        anthropic = path == "/v1/messages"
        try:
            body = await _read_body(receive)
            if path == "/healthz":
                await self._send(send, 200, b"ok", b"text/plain")
            elif self.engine is not None and path in ("/stats", "/reset", "/reset-stats"):
                await self._engine_route(send, method, path, self.engine)
            elif path == "/v1/models" and method == "GET":
                await self._json(send, 200, {"object": "list", "data": self._model_list()})
            elif path.startswith("/v1/models/") and method == "GET":
                await self._model(send, path.removeprefix("/v1/models/"))
            elif path in ("/v1/chat/completions", "/v1/completions", "/v1/messages"):
                if method != "POST":
                    raise _BadRequest(f"{method} {path}: use POST", 405)
                headers = dict(scope.get("headers", ()))
                await self._generate(path, _json_body(body), receive, send, headers)
            else:
                raise _BadRequest(f"no route {method} {path}", 404, "not_found_error")
        except _BadRequest as exc:
            await self._error(send, exc, anthropic)

    # -- routes ----------------------------------------------------------------------------------
    def _model_list(self) -> list[dict[str, Any]]:
        return [
            {"id": model, "object": "model", "created": 0, "owned_by": self.pod}
            for model in self.models
        ]

    async def _model(self, send: Send, model: str) -> None:
        for entry in self._model_list():
            if entry["id"] == model:
                await self._json(send, 200, entry)
                return
        raise _BadRequest(f"the model {model!r} does not exist", 404, "not_found_error")

    async def _generate(
        self,
        path: str,
        body: dict[str, Any],
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        headers = headers or {}
        generation = self._generation(path, body, headers)
        number = next(self._ids)
        # The client leaving (or the Pod being killed) ends uvicorn's receive(): generation
        # stops there instead of sleeping through tokens nobody reads.
        gone = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(_watch(receive, gone))
        self._running += 1
        try:
            if path == "/v1/chat/completions":
                render: _Renderer = _Chat(self.pod, f"chatcmpl-{self.pod}-{number}", generation)
            elif path == "/v1/completions":
                render = _Completion(self.pod, f"cmpl-{self.pod}-{number}", generation)
            else:
                render = _Messages(self.pod, f"msg_{self.pod}-{number}", generation)
            engine = self.engine
            asked = headers.get(b"endpoint-load-metrics-format")
            if engine is None:
                pace = functools.partial(_pause, gone, generation.delay)
                report = self._report(asked)  # counts this generation, as vLLM's report does
            else:
                seq = engine.submit(generation.session, generation.prompt_tokens, len(render))
                render.cached = seq.cached
                pace = functools.partial(_engine_token, seq, gone)
                report = _engine_report(engine, asked)
            if generation.stream:
                await self._stream(send, render, generation, gone, report, pace)
            else:
                for _ in range(len(render)):
                    if await pace():
                        return
                await self._json(send, 200, render.whole(), request_id=render.id, report=report)
        finally:
            self._running -= 1
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _stream(
        self,
        send: Send,
        render: _Renderer,
        generation: _Generation,
        gone: asyncio.Event,
        report: bytes | None = None,
        pace: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *self._headers(b"text/event-stream", request_id=render.id, report=report),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        async for event in render.events(gone, pace):
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b""})

    # -- answers ---------------------------------------------------------------------------------
    async def _engine_route(self, send: Send, method: str, path: str, engine: Engine) -> None:
        if path == "/stats":
            await self._json(send, 200, {"pod": self.pod, **engine.counters()})
        elif method != "POST":
            raise _BadRequest(f"{method} {path}: use POST", 405)
        else:
            engine.reset(cache=path == "/reset")
            await self._json(send, 200, {"reset": self.pod})

    def _report(self, asked: bytes | None) -> bytes | None:
        """The ORCA load report a generation's answer carries when its request asked for one
        (``endpoint-load-metrics-format``), in vLLM's named-metric style: this app has no
        queue (``num_requests_waiting`` is 0) and says how many generations run."""
        if asked is None or asked.upper() not in (b"TEXT", b"JSON"):
            return None
        named = {"num_requests_waiting": 0.0, "num_requests_running": float(self._running)}
        if asked.upper() == b"JSON":
            return b"JSON " + json.dumps({"named_metrics": named}).encode()
        return b"TEXT " + ", ".join(f"named_metrics.{k}={v}" for k, v in named.items()).encode()

    def _headers(
        self, content_type: bytes, *, request_id: str = "", report: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", content_type), (b"x-pod", self.pod.encode())]
        if report is not None:
            headers.append((b"endpoint-load-metrics", report))
        if request_id:
            # Both SDKs expose it on responses and errors (OpenAI's and Anthropic's names).
            headers += [
                (b"x-request-id", request_id.encode()),
                (b"request-id", request_id.encode()),
            ]
        return headers

    async def _send(
        self,
        send: Send,
        status: int,
        body: bytes,
        content_type: bytes,
        *,
        request_id: str = "",
        report: bytes | None = None,
    ) -> None:
        headers = self._headers(content_type, request_id=request_id, report=report)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _json(
        self,
        send: Send,
        status: int,
        data: Any,
        *,
        request_id: str = "",
        report: bytes | None = None,
    ) -> None:
        body = json.dumps(data, separators=(",", ":")).encode()
        await self._send(
            send, status, body, b"application/json", request_id=request_id, report=report
        )

    async def _error(self, send: Send, exc: _BadRequest, anthropic: bool) -> None:
        message = f"{exc} (pod {self.pod})"
        if anthropic:
            data: dict[str, Any] = {
                "type": "error",
                "error": {"type": exc.kind, "message": message},
            }
        else:
            data = {"error": {"message": message, "type": exc.kind, "param": None, "code": None}}
        await self._json(send, exc.status, data)

    # -- the "model" -----------------------------------------------------------------------------
    def _generation(
        self, path: str, body: dict[str, Any], headers: dict[bytes, bytes] | None = None
    ) -> _Generation:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("'model' must be a non-empty string")
        if path == "/v1/completions":
            prompt = _prompt_text(body.get("prompt", ""))
            limit = _optional_tokens("max_tokens", body.get("max_tokens"))
        else:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _BadRequest("'messages' must be a non-empty list")
            prompt = " ".join(_message_text(m) for m in messages)
            if path == "/v1/messages":
                prompt = f"{_content_text(body.get('system', ''))} {prompt}"
                limit = _optional_tokens("max_tokens", body.get("max_tokens"))
                if limit is None:
                    raise _BadRequest("'max_tokens' is required")
            else:
                limit = _optional_tokens(
                    "max_completion_tokens", body.get("max_completion_tokens")
                ) or _optional_tokens("max_tokens", body.get("max_tokens"))
        if body.get("n", 1) != 1:
            raise _BadRequest("only n=1 is served")
        wanted = self.tokens if body.get("tokens") is None else _tokens("tokens", body["tokens"])
        delay = self.token_delay
        if body.get("token_delay") is not None:
            delay = _delay("token_delay", body["token_delay"])
        count = wanted if limit is None else min(wanted, limit)
        words = prompt.split()
        last = _last_user_words(body, path) or words or ["ok"]
        tokens = [f"{self.pod}:"] + [f" {last[i % len(last)]}" for i in range(count - 1)]
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _BadRequest("'stream' must be a boolean")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise _BadRequest("'stream_options' must be an object")
        prompt_tokens = len(words)
        if body.get("prompt_tokens") is not None:  # this app's own field, as "tokens" is
            prompt_tokens = _tokens("prompt_tokens", body["prompt_tokens"])
        session = (headers or {}).get(b"x-session-id", b"").decode("latin-1")
        return _Generation(
            model=model,
            tokens=tokens,
            finish="length" if count < wanted else "stop",
            prompt_tokens=prompt_tokens,
            session=session or str(body.get("user") or ""),
            delay=delay,
            stream=stream,
            include_usage=bool(options.get("include_usage", False)),
        )


def inference_app(context: PodContext) -> InferenceApp:
    """The app factory for a LocalCluster workload:
    ``add_deployment("llm", app="headlesslb.testing:inference_app", factory=True)``."""
    return InferenceApp(context.name)


# -- renderers: one generation in each API's format ---------------------------------------------
class _Renderer(abc.ABC):
    """One generation in one API's wire format: the whole answer, or its stream's events (each
    API's subclass says how)."""

    def __init__(self, pod: str, id: str, generation: _Generation) -> None:
        self.pod = pod
        self.id = id
        self.g = generation
        self.created = int(time.time())
        self.cached: int | None = None
        """Prompt tokens its engine found in the prefix cache (None: no engine)."""

    def __len__(self) -> int:
        """How many tokens it has."""
        return len(self.g.tokens)

    @property
    def text(self) -> str:
        """The whole completion."""
        return "".join(self.g.tokens)

    def usage(self) -> dict[str, Any]:
        """OpenAI's usage object (with the cached prompt tokens, when an engine paced it)."""
        done = len(self.g.tokens)
        prompt = self.g.prompt_tokens
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
        }
        if self.cached is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached}
        return usage

    @abc.abstractmethod
    def whole(self) -> dict[str, Any]:
        """The non-streamed answer."""

    @abc.abstractmethod
    def chunks(self) -> list[dict[str, Any]]:
        """The streamed answer's data, before the tokens (sent at once)."""

    @abc.abstractmethod
    def token(self, token: str) -> dict[str, Any]:
        """The event carrying one token."""

    @abc.abstractmethod
    def closing(self) -> list[dict[str, Any]]:
        """The streamed answer's data after the tokens (the finish reason, the usage)."""

    def frame(self, data: dict[str, Any]) -> bytes:
        """One server-sent event."""
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    def done(self) -> list[bytes]:
        """The stream's last raw events."""
        return [b"data: [DONE]\n\n"]

    async def events(
        self, gone: asyncio.Event, pace: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[bytes]:
        """The stream: opening events, one event a token (each after ``delay``, or when
        ``pace`` returns), closing ones. It ends early when the client goes away."""
        if pace is None:
            pace = functools.partial(_pause, gone, self.g.delay)
        for data in self.chunks():
            yield self.frame(data)
        for token in self.g.tokens:
            if await pace():
                return
            yield self.frame(self.token(token))
        for data in self.closing():
            yield self.frame(data)
        for raw in self.done():
            yield raw


class _Chat(_Renderer):
    """``/v1/chat/completions``: ``chat.completion`` and ``chat.completion.chunk`` objects."""

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.g.model,
            "system_fingerprint": self.pod,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.g.include_usage:
            chunk["usage"] = None
        return chunk

    def whole(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.g.model,
            "system_fingerprint": self.pod,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self.g.finish,
                }
            ],
            "usage": self.usage(),
        }

    def chunks(self) -> list[dict[str, Any]]:
        return [self._chunk({"role": "assistant", "content": ""}, None)]

    def token(self, token: str) -> dict[str, Any]:
        return self._chunk({"content": token}, None)

    def closing(self) -> list[dict[str, Any]]:
        last = [self._chunk({}, self.g.finish)]
        if self.g.include_usage:
            usage = {**self._chunk({}, None), "choices": [], "usage": self.usage()}
            last.append(usage)
        return last


class _Completion(_Renderer):
    """``/v1/completions``: ``text_completion`` objects, whole and streamed alike."""

    def _object(self, text: str, finish: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.g.model,
            "system_fingerprint": self.pod,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }

    def whole(self) -> dict[str, Any]:
        return {**self._object(self.text, self.g.finish), "usage": self.usage()}

    def chunks(self) -> list[dict[str, Any]]:
        return []

    def token(self, token: str) -> dict[str, Any]:
        return self._object(token, None)

    def closing(self) -> list[dict[str, Any]]:
        last = [self._object("", self.g.finish)]
        if self.g.include_usage:
            last.append({**self._object("", None), "choices": [], "usage": self.usage()})
        return last


class _Messages(_Renderer):
    """Anthropic's ``/v1/messages``: a ``message``, or its named stream events."""

    def _stop_reason(self) -> str:
        return "max_tokens" if self.g.finish == "length" else "end_turn"

    def _message(self, content: list[dict[str, Any]], stop: str | None, out: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.g.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": self.g.prompt_tokens, "output_tokens": out},
        }

    def whole(self) -> dict[str, Any]:
        text = [{"type": "text", "text": self.text}]
        return self._message(text, self._stop_reason(), len(self.g.tokens))

    def frame(self, data: dict[str, Any]) -> bytes:
        # Anthropic names every event; the SDK dispatches on the name.
        return f"event: {data['type']}\n".encode() + super().frame(data)

    def chunks(self) -> list[dict[str, Any]]:
        return [
            {"type": "message_start", "message": self._message([], None, 0)},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {"type": "ping"},
        ]

    def token(self, token: str) -> dict[str, Any]:
        return {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": token},
        }

    def closing(self) -> list[dict[str, Any]]:
        return [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": self._stop_reason(), "stop_sequence": None},
                "usage": {"output_tokens": len(self.g.tokens)},
            },
            {"type": "message_stop"},
        ]

    def done(self) -> list[bytes]:
        return []  # Anthropic's stream ends with message_stop, not [DONE]


# -- helpers -------------------------------------------------------------------------------------
async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to set up or tear down: acknowledge both."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise _BadRequest(f"the body is over {_MAX_BODY} bytes", 413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _watch(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (uvicorn's receive() returns then)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _pause(gone: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` (a token's time); True if the client went away meanwhile."""
    if seconds <= 0:
        return gone.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(gone.wait(), seconds)
    return gone.is_set()


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest("the body must be a JSON object")
    return data


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text of its parts (``[{"type": "text", ...}]``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    if content is None:
        return ""
    raise _BadRequest("a message's content must be a string or a list of parts")


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        raise _BadRequest("every message must be an object")
    return _content_text(message.get("content"))


def _last_user_words(body: dict[str, Any], path: str) -> list[str]:
    """The words the completion repeats: the last user message's (the prompt's, for
    ``/v1/completions``)."""
    if path == "/v1/completions":
        return _prompt_text(body.get("prompt", "")).split()
    for message in reversed(body["messages"]):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content")).split()
    return []


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return " ".join(prompt)
    raise _BadRequest("'prompt' must be a string or a list of strings")


def _tokens(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_TOKENS:
        raise _BadRequest(f"{name!r} must be an integer from 1 to {_MAX_TOKENS}, not {value!r}")
    return value


def _optional_tokens(name: str, value: Any) -> int | None:
    return None if value is None else _tokens(name, value)


def _delay(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= _MAX_DELAY
    ):
        raise _BadRequest(f"{name!r} must be seconds from 0 to {_MAX_DELAY:g}, not {value!r}")
    return float(value)


async def _engine_token(seq: EngineSequence, gone: asyncio.Event) -> bool:
    """Wait for the engine's next token of ``seq``; True when the client went away (the engine
    still finishes the sequence, as a real one would until it noticed)."""
    if gone.is_set():
        return True
    await seq.tokens.get()
    return gone.is_set()


def _engine_report(engine: Engine, asked: bytes | None) -> bytes | None:
    if asked is None or asked.upper() not in (b"TEXT", b"JSON"):
        return None
    return engine.report(asked.decode("latin-1")).encode()
