"""The inference timing model's Pods (headlesslb/testing/_inference_model.py: the SDKs'
inference app paced by an engine) over real HTTP: SSE tokens, the prefix cache per
conversation, vLLM-style load reports when asked, and a headlesslb client reading them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from headlesslb import LeastLoaded
from headlesslb.core.orca import HEADER, parse_load_report
from headlesslb.sync import HeadlessClient
from headlesslb.testing import LocalCluster
from headlesslb.testing._inference_model import ENVIRONMENT, EngineModel

APP = "headlesslb.testing._inference_model:app"


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    # Twenty times faster than the modelled GPU; the cluster process reads it at start.
    monkeypatch.setenv(ENVIRONMENT, json.dumps({"time_scale": 0.05}))
    with LocalCluster() as cluster:
        cluster.add_statefulset("llm", replicas=1, app=APP, factory=True)
        yield cluster


def _stream(http: httpx.Client, url: str, session: str, prompt: int) -> tuple[int, dict, str]:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "prompt_tokens": prompt,
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"x-session-id": session, "endpoint-load-metrics-format": "TEXT"}
    tokens = 0
    usage: dict = {}
    with http.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200
        report = response.headers[HEADER]
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                choices = chunk["choices"]
                tokens += bool(choices and choices[0]["delta"].get("content"))
                usage = chunk.get("usage") or usage
    return tokens, usage, report


def test_tokens_stream_and_a_returning_conversation_hits_the_cache(cluster: LocalCluster) -> None:
    url = cluster.url("llm-0", "/v1/chat/completions")
    with httpx.Client(trust_env=False, timeout=30) as http:
        tokens, usage, report = _stream(http, url, "conv-a", 1000)
        assert tokens == 5 and usage["prompt_tokens"] == 1000
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0
        parsed = parse_load_report(report, 0.0)  # vLLM's names, and what A58 weighs by
        # Made as the request is queued, as vLLM's: it counts the request itself.
        assert parsed.metric("num_requests_waiting") == 1.0
        assert parsed.metric("kv_cache_usage_perc") is not None
        # The next turn: the previous prompt and answer are cached, the new tokens are not.
        _, usage, _ = _stream(http, url, "conv-a", 1200)
        assert usage["prompt_tokens_details"]["cached_tokens"] == 1005
        _, usage, _ = _stream(http, url, "conv-b", 1200)
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0
        stats = http.get(cluster.url("llm-0", "/stats")).json()
        assert (stats["served"], stats["cached_tokens"]) == (3, 1005)
        assert http.post(cluster.url("llm-0", "/reset")).status_code == 200
        _, usage, _ = _stream(http, url, "conv-a", 1200)
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0


def test_a_client_reading_reports_sees_them(cluster: LocalCluster) -> None:
    with HeadlessClient(
        "llm-hl", port="http", picker=LeastLoaded(), **cluster.client_kwargs()
    ) as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 2}
        answer = client.post("/v1/chat/completions", json=body)
        assert answer.json()["usage"]["prompt_tokens"] == 3
        (status,) = client.endpoints()
        assert status.load is not None
        assert status.load.metric("num_requests_running") is not None


def test_the_model_is_the_cited_figures() -> None:
    model = EngineModel()
    assert model.step(1, 0) == pytest.approx(1 / 75)  # 75 tokens/s at one sequence
    assert 8 / model.step(8, 0) == pytest.approx(6.6 * 75)  # 6.6x that at the knee, 8
    assert model.step(0, 10_000) == pytest.approx(1.0)
    assert EngineModel(speed=0.5).step(1, 0) == pytest.approx(2 / 75)


def test_the_sdk_inference_app_reports_its_running_generations_when_asked() -> None:
    with LocalCluster() as cluster:
        cluster.add_deployment(
            "vllm", replicas=2, app="headlesslb.testing:inference_app", factory=True
        )
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        with HeadlessClient(
            "vllm-hl",
            port="http",
            picker=LeastLoaded(metric="num_requests_running"),
            **cluster.client_kwargs(),
        ) as client:
            for _ in range(6):
                assert client.post("/v1/chat/completions", json=body).status_code == 200
            reports = [s.load for s in client.endpoints()]
            assert all(r is not None for r in reports)
            # Each answer counted its own generation, and nothing queued.
            assert {r.metric("num_requests_running") for r in reports if r} == {1.0}
            assert {r.metric("num_requests_waiting") for r in reports if r} == {0.0}
        pod = cluster.pods("vllm")[0].name
        with httpx.Client(trust_env=False, timeout=10) as http:
            plain = http.post(cluster.url(pod, "/v1/chat/completions"), json=body)
            assert HEADER not in plain.headers  # only when asked
            streamed = {**body, "stream": True}
            asked = {"endpoint-load-metrics-format": "JSON"}
            with http.stream(
                "POST", cluster.url(pod, "/v1/chat/completions"), json=streamed, headers=asked
            ) as response:
                assert response.headers[HEADER].startswith("JSON {")
