"""The inference app (``headlesslb.testing.inference_app``) on one local-cluster Pod, spoken to
directly: plain httpx2 for the wire format, and the real ``openai`` and ``anthropic`` SDKs,
which must parse everything it sends, streamed and not. (headlesslb's clients in front of
several such Pods are tested in tests/integration/test_sdks.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from headlesslb.errors import ConfigurationError
from headlesslb.testing import InferenceApp, LocalCluster

APP = "headlesslb.testing:inference_app"
USER = [{"role": "user", "content": "say hello"}]


@pytest.fixture(scope="module")
def pod() -> Iterator[tuple[str, str]]:
    """One inference Pod: ``(its name, its base URL)``."""
    with LocalCluster() as cluster:
        (info,) = cluster.add_deployment("llm", replicas=1, app=APP, factory=True)
        yield info.name, cluster.url(info.name)


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(trust_env=False, timeout=10.0) as client:  # loopback only, no proxy
        yield client


@pytest.fixture
def oai(pod: tuple[str, str], http: httpx2.Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=pod[1] + "/v1", api_key="-", http_client=http, max_retries=0)


@pytest.fixture
def claude(pod: tuple[str, str], http: httpx2.Client) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=pod[1], api_key="-", http_client=http, max_retries=0)


def _expected(pod: str, words: str, tokens: int) -> str:
    """The model's deterministic output: the Pod's name, then the last user words in turn."""
    cycle = words.split()
    return f"{pod}:" + "".join(f" {cycle[i % len(cycle)]}" for i in range(tokens - 1))


def _events(body: str) -> list[tuple[str | None, str]]:
    """Server-sent events as ``(event name, data)``, by the SSE framing rules we use."""
    events = []
    for block in body.split("\n\n"):
        if not block:
            continue
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            else:
                assert field == "data", line
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def test_models_name_the_pod(pod: tuple[str, str], oai: openai.OpenAI) -> None:
    (model,) = oai.models.list()
    assert model.id == "headlesslb-echo" and model.owned_by == pod[0]
    assert oai.models.retrieve("headlesslb-echo").id == "headlesslb-echo"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("nope")


def test_a_chat_completion_names_its_pod_and_is_deterministic(
    pod: tuple[str, str], oai: openai.OpenAI
) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="any", messages=USER, extra_body={"tokens": 5}
    )
    completion = raw.parse()
    assert raw.headers["x-pod"] == pod[0]
    (choice,) = completion.choices
    assert choice.message.content == _expected(pod[0], "say hello", 5)
    assert choice.message.content == f"{pod[0]}: say hello say hello"
    assert choice.finish_reason == "stop"
    assert completion.model == "any" and completion.system_fingerprint == pod[0]
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 5)


def test_max_tokens_stops_the_model(pod: tuple[str, str], oai: openai.OpenAI) -> None:
    capped = oai.chat.completions.create(model="m", messages=USER, max_completion_tokens=3)
    assert capped.choices[0].message.content == _expected(pod[0], "say hello", 3)
    assert capped.choices[0].finish_reason == "length"
    text = oai.completions.create(model="m", prompt="one two", max_tokens=4)
    assert text.choices[0].text == f"{pod[0]}: one two one"
    assert text.choices[0].finish_reason == "length"


def test_a_chat_stream_on_the_wire(pod: tuple[str, str], http: httpx2.Client) -> None:
    body = {
        "model": "m",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tokens": 4,
    }
    response = http.post(pod[1] + "/v1/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["x-pod"] == pod[0]
    events = _events(response.text)
    assert all(name is None for name, _ in events)  # OpenAI's events are unnamed
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = [c["choices"][0]["delta"]["content"] for c in chunks[1:5]]
    assert tokens == [f"{pod[0]}:", " say", " hello", " say"]
    assert chunks[5]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[6]["choices"] == [] and chunks[6]["usage"]["completion_tokens"] == 4


def test_streams_through_the_openai_sdk(pod: tuple[str, str], oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="m", messages=USER, stream=True, extra_body={"tokens": 30}
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == _expected(pod[0], "say hello", 30)
    completions = oai.completions.create(model="m", prompt="a b c", max_tokens=7, stream=True)
    assert "".join(c.choices[0].text for c in completions) == _expected(pod[0], "a b c", 7)


@pytest.mark.anyio
async def test_streams_through_the_async_sdks(pod: tuple[str, str]) -> None:
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        client = openai.AsyncOpenAI(
            base_url=pod[1] + "/v1", api_key="-", http_client=http, max_retries=0
        )
        stream = await client.chat.completions.create(
            model="m", messages=USER, stream=True, extra_body={"tokens": 9, "token_delay": 0.001}
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == _expected(pod[0], "say hello", 9)
        claude = anthropic.AsyncAnthropic(
            base_url=pod[1], api_key="-", http_client=http, max_retries=0
        )
        async with claude.messages.stream(model="c", max_tokens=6, messages=USER) as events:
            assert await events.get_final_text() == _expected(pod[0], "say hello", 6)


def test_anthropic_messages(pod: tuple[str, str], claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="claude-x", max_tokens=4, messages=USER)
    assert message.content[0].type == "text"
    assert message.content[0].text == _expected(pod[0], "say hello", 4)
    assert message.stop_reason == "max_tokens"  # the default is 16 tokens
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 4)
    whole = claude.messages.create(
        model="claude-x", max_tokens=100, messages=USER, system="be brief", extra_body={"tokens": 3}
    )
    assert whole.stop_reason == "end_turn" and whole.usage.input_tokens == 4


def test_an_anthropic_stream(pod: tuple[str, str], claude: anthropic.Anthropic) -> None:
    events = claude.messages.create(model="c", max_tokens=3, messages=USER, stream=True)
    kinds = [event.type for event in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    with claude.messages.stream(model="c", max_tokens=50, messages=USER) as stream:
        assert "".join(stream.text_stream) == _expected(pod[0], "say hello", 16)
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 16


def test_an_anthropic_stream_on_the_wire(pod: tuple[str, str], http: httpx2.Client) -> None:
    body = {"model": "c", "max_tokens": 2, "messages": USER, "stream": True}
    response = http.post(pod[1] + "/v1/messages", json=body)
    events = _events(response.text)
    # Every event is named, and its data's type says the same name.
    assert all(name == json.loads(data)["type"] for name, data in events)
    assert [name for name, _ in events][:3] == ["message_start", "content_block_start", "ping"]
    assert events[-1][0] == "message_stop"


def test_errors_in_each_api_s_format(pod: tuple[str, str], http: httpx2.Client) -> None:
    bad = http.post(pod[1] + "/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and bad.headers["x-pod"] == pod[0]
    assert bad.json()["error"]["type"] == "invalid_request_error"
    anthropic_bad = http.post(pod[1] + "/v1/messages", json={"model": "c", "messages": USER})
    assert anthropic_bad.status_code == 400
    assert anthropic_bad.json()["type"] == "error"
    assert "max_tokens" in anthropic_bad.json()["error"]["message"]
    assert http.get(pod[1] + "/v1/nothing").status_code == 404
    assert http.get(pod[1] + "/v1/chat/completions").status_code == 405
    for field, value in [("tokens", 0), ("tokens", "5"), ("token_delay", -1), ("n", 2)]:
        answer = http.post(
            pod[1] + "/v1/completions", json={"model": "m", "prompt": "x", field: value}
        )
        assert answer.status_code == 400, (field, value)
    assert http.get(pod[1] + "/healthz").text == "ok"


def test_sdk_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="m", messages=USER, extra_body={"tokens": -1})
    assert "'tokens' must be an integer" in caught.value.message


def test_bad_defaults_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        InferenceApp("p", tokens=0)
    with pytest.raises(ConfigurationError):
        InferenceApp("p", token_delay=float("nan"))


def test_generation_stops_when_the_client_goes_away() -> None:
    """Driven through its ASGI interface: after two tokens the client disconnects, and the
    app returns instead of sleeping through the remaining 998."""

    async def run() -> list[dict[str, Any]]:
        app = InferenceApp("p", token_delay=0.05)
        body = {"model": "m", "prompt": "x", "stream": True, "tokens": 1000}
        incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await incoming.put({"type": "http.request", "body": json.dumps(body).encode()})
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)
            if sum(1 for m in sent if m.get("body")) == 2:
                await incoming.put({"type": "http.disconnect"})

        scope = {"type": "http", "method": "POST", "path": "/v1/completions"}
        async with asyncio.timeout(30):  # a bound: without the stop it would take 50 s
            await app(scope, incoming.get, send)
        return sent

    sent = asyncio.run(run())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert 2 <= len(bodies) < 10
    assert all(m.get("more_body") for m in bodies)  # never completed: nobody was listening
