"""An inference Pod that models what routing changes: a continuous-batching engine with a bounded
number of running sequences and a waiting queue, chunked prefill of the prompt tokens not in its
prefix cache, an LRU prefix cache per Pod keyed by conversation, per-token decode streamed as
server-sent events, and ORCA load reports in vLLM's named-metric style.

It is a *timing model*, not a model: the tokens are the SDKs' inference app's placeholders
(:class:`~headlesslb.testing.InferenceApp`, which it paces). Serve it on a workload's Pods::

    cluster.add_deployment("llm", 3, app="headlesslb.testing._inference_model:app", factory=True)

The model, per Pod (one engine; every figure is seconds of model time, multiplied by
``time_scale`` on the wall clock and divided by the Pod's ``speed``)::

    each engine step:   admit waiting sequences while fewer than MAX_SEQS run (FIFO);
                        give prefilling sequences up to CHUNK_TOKENS prompt tokens (chunked
                        prefill, FIFO), and every decoding sequence one token;
                        lasts  decode(b) + prefill_tokens / PREFILL_RATE
                        decode(b) = DECODE_STEP_1 + (DECODE_STEP_FULL - DECODE_STEP_1)
                                                    × (b - 1) / (MAX_SEQS - 1)   (0 if b = 0)
    a request:          prompt P tokens, of which C are in the prefix cache under its
                        conversation (min(P, cached)); prefills max(1, P - C) tokens; its first
                        token comes with the step that ends its prefill; then one token a step
    after it:           its conversation's cache entry becomes P + output tokens (LRU; entries
                        are evicted, least recently used first, while the cache holds more than
                        CACHE_TOKENS)

Constants (:class:`EngineModel`), from one public vLLM benchmark of one model on one GPU, John
Musgrave, "vLLM throughput-latency sweep on NVIDIA A100" (https://johnmusgrave.com/p/
vllm-throughput-latency-sweep-on): meta-llama/Llama-3.1-8B-Instruct, BF16, vLLM 0.23.0, one
A100 40GB, 1,024 input and 128 output tokens:

- ``DECODE_STEP_1`` = 13.3 ms: "decode at one request per time runs at about 75 tokens/sec";
- ``MAX_SEQS`` = 8 and ``DECODE_STEP_FULL`` = 16.2 ms: batching to 8 concurrent requests is "a
  6.6x gain with almost no latency cost", "the knee sits at C=8, and that point ... is where you
  run a production system": 8 sequences at 6.6 × 75 tokens/s in all is 16.2 ms a step;
- ``PREFILL_RATE`` = 10,000 tokens/s: the sweep publishes no prefill rate; this is the same
  GPU's BF16 peak (312 TFLOPS) over the model's 2 × 8.0e9 FLOP a token (19,500 tokens/s) at half
  of peak, an assumption stated here, not a measurement;
- ``CACHE_TOKENS`` = 152,000: KV memory at vLLM's default 0.9 of 40 GB, less 16 GB of weights,
  over Llama-3.1-8B's 128 KiB of KV a token (32 layers × 8 KV heads × 128 dims × 2 (K, V) × 2
  bytes);
- ``CHUNK_TOKENS`` = 2,048: vLLM's chunked-prefill token budget a step (``max_num_batched_tokens``
  default of its V0 engine).

None of them is tuned to a benchmark's result. Every response's headers go out when the
request is queued (as vLLM's streamed responses: before its prefill), with the load report
when the request asks for one (``endpoint-load-metrics-format: TEXT`` or ``JSON``)::

    endpoint-load-metrics: TEXT named_metrics.kv_cache_usage_perc=0.41,
        named_metrics.num_requests_waiting=3, named_metrics.num_requests_running=8,
        rps_fractional=4.2, application_utilization=1.38

The first two are vLLM's names; the running count, ``rps_fractional`` (completed requests a
second of model time, averaged over a second) and ``application_utilization`` ((running +
waiting) / MAX_SEQS, averaged likewise) are what a gRPC/Envoy ORCA backend sends for weighted
round robin, which vLLM does not.

The app is the SDKs' inference app (OpenAI's and Anthropic's routes and wire formats, SSE when
``"stream": true``) with the engine pacing its tokens: the conversation is the ``x-session-id``
header, else the body's ``user``; the prompt's size is the body's ``prompt_tokens`` (this app's
own field), else its messages' words; the answer's, ``max_tokens``, else 32. The usage carries
``prompt_tokens_details.cached_tokens``; ``GET /stats`` reads the engine's counters,
``POST /reset`` empties its cache and counters, ``POST /reset-stats`` the counters only (the
end of a warm-up).

The app factory reads ``HEADLESSLB_INFERENCE_MODEL`` (JSON: ``{"time_scale": 0.2,
"speeds": {"llm-2": 0.5}}``) from the cluster process's environment.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
from dataclasses import dataclass, field

from ._apps import PodContext
from ._inference import InferenceApp

__all__ = ["ENVIRONMENT", "Engine", "EngineModel", "EngineSequence", "app"]


ENVIRONMENT = "HEADLESSLB_INFERENCE_MODEL"
"""The variable the app factory reads its time scale and per-Pod speeds from (JSON)."""
_AVERAGING = 1.0
"""Seconds of model time the reported rates and utilization are averaged over."""


@dataclass(frozen=True, slots=True)
class EngineModel:
    """The engine's constants (see the module docstring for where each comes from)."""

    decode_step_1: float = 1 / 75
    decode_step_full: float = 8 / (6.6 * 75)
    max_seqs: int = 8
    prefill_rate: float = 10_000.0
    cache_tokens: int = 152_000
    chunk_tokens: int = 2048
    speed: float = 1.0
    """This Pod's speed: 0.5 takes twice as long for everything."""
    time_scale: float = 1.0
    """Wall seconds a second of model time takes (0.2: five times faster than the GPU)."""

    def step(self, decoding: int, prefill_tokens: int) -> float:
        """Model seconds of one step with ``decoding`` sequences and ``prefill_tokens``."""
        seconds = prefill_tokens / self.prefill_rate
        if decoding:
            extra = (self.decode_step_full - self.decode_step_1) * (decoding - 1)
            seconds += self.decode_step_1 + extra / max(1, self.max_seqs - 1)
        return seconds / self.speed


@dataclass(eq=False)
class EngineSequence:
    """One request in the engine: its tokens come out of :attr:`tokens` (None ends them)."""

    session: str
    prompt: int
    cached: int
    output: int
    prefill_left: int
    tokens: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)
    produced: int = 0


@dataclass
class _Stats:
    served: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    sequence_seconds: float = 0.0
    """Model seconds × running sequences: / (MAX_SEQS × elapsed) is the Pod's utilization."""
    busy_seconds: float = 0.0


class Engine:
    """One Pod's continuous-batching engine (asyncio; started by the first request)."""

    def __init__(self, model: EngineModel) -> None:
        self.model = model
        self.waiting: collections.deque[EngineSequence] = collections.deque()
        self.running: list[EngineSequence] = []
        self.cache: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.cached_total = 0
        self.stats = _Stats()
        self._rps = 0.0
        self._utilization = 0.0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def reset(self, *, cache: bool = True) -> None:
        """Zero the counters and, with ``cache``, empty the cache and the averages (between
        benchmark rounds, nothing in flight); without, at the end of a round's warm-up."""
        self.stats = _Stats()
        if cache:
            self.cache.clear()
            self.cached_total = 0
            self._rps = self._utilization = 0.0

    def counters(self) -> dict[str, float]:
        """The counters since the last reset, and the engine's size and speed (``GET /stats``)."""
        stats = self.stats
        return {
            "served": stats.served,
            "prompt_tokens": stats.prompt_tokens,
            "cached_tokens": stats.cached_tokens,
            "sequence_seconds": stats.sequence_seconds,
            "busy_seconds": stats.busy_seconds,
            "max_seqs": self.model.max_seqs,
            "speed": self.model.speed,
        }

    def submit(self, session: str, prompt: int, output: int) -> EngineSequence:
        """Queue a request; its tokens come out of the returned sequence's queue."""
        cached = min(self.cache.get(session, 0), prompt)
        if cached:
            self.cache.move_to_end(session)
        # vLLM computes at least one token of a prompt, even one wholly cached.
        seq = EngineSequence(session, prompt, cached, output, max(1, prompt - cached))
        self.waiting.append(seq)
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        self._wake.set()
        return seq

    def report(self, form: str) -> str:
        """The ORCA load report, ``TEXT`` or ``JSON``."""
        model = self.model
        usage = (sum(s.prompt + s.produced for s in self.running) + self.cached_total) / (
            model.cache_tokens
        )
        named = {
            "kv_cache_usage_perc": round(min(1.0, usage), 4),
            "num_requests_waiting": float(len(self.waiting)),
            "num_requests_running": float(len(self.running)),
        }
        fields = {
            "rps_fractional": round(self._rps, 4),
            "application_utilization": round(self._utilization, 4),
        }
        if form.upper() == "JSON":
            return "JSON " + json.dumps({**fields, "named_metrics": named})
        text = [f"named_metrics.{k}={v}" for k, v in named.items()]
        text += [f"{k}={v}" for k, v in fields.items()]
        return "TEXT " + ", ".join(text)

    def _average(self, value: float, sample: float, seconds: float) -> float:
        weight = 1.0 - math.exp(-seconds / _AVERAGING)
        return value + (sample - value) * weight

    async def _run(self) -> None:
        model = self.model
        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        due = loop.time()
        while True:
            if not self.running and not self.waiting:
                wake.clear()
                await wake.wait()
                due = loop.time()
            while self.waiting and len(self.running) < model.max_seqs:
                self.running.append(self.waiting.popleft())
            decoding = [s for s in self.running if not s.prefill_left]
            budget = model.chunk_tokens - len(decoding)
            prefilled = 0
            first_tokens = []
            for seq in self.running:
                if seq.prefill_left and budget > 0:
                    take = min(seq.prefill_left, budget)
                    seq.prefill_left -= take
                    budget -= take
                    prefilled += take
                    if not seq.prefill_left:
                        first_tokens.append(seq)
            seconds = model.step(len(decoding), prefilled)
            due += seconds * model.time_scale
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                due = loop.time()  # the loop fell behind (a busy machine): drop the debt
            stats = self.stats
            stats.busy_seconds += seconds
            stats.sequence_seconds += seconds * len(self.running)
            done = 0
            for seq in (*decoding, *first_tokens):
                seq.produced += 1
                seq.tokens.put_nowait(seq.produced)
                if seq.produced >= seq.output:
                    self._finish(seq)
                    done += 1
            self._rps = self._average(self._rps, done / seconds if seconds else 0.0, seconds)
            load = (len(self.running) + len(self.waiting)) / model.max_seqs
            self._utilization = self._average(self._utilization, load, seconds)

    def _finish(self, seq: EngineSequence) -> None:
        self.running.remove(seq)
        seq.tokens.put_nowait(None)
        stats = self.stats
        stats.served += 1
        stats.prompt_tokens += seq.prompt
        stats.cached_tokens += seq.cached
        cache = self.cache
        self.cached_total += seq.prompt + seq.output - cache.pop(seq.session, 0)
        cache[seq.session] = seq.prompt + seq.output
        while self.cached_total > self.model.cache_tokens and cache:
            _, tokens = cache.popitem(last=False)
            self.cached_total -= tokens


def app(context: PodContext) -> InferenceApp:
    """The app factory: the SDKs' inference app (:class:`~headlesslb.testing.InferenceApp`:
    OpenAI's and Anthropic's wire formats) with one engine per Pod pacing its tokens, answers
    of 32 tokens unless a request says, and the Pod's speed and the time scale from
    ``HEADLESSLB_INFERENCE_MODEL`` (JSON) in the cluster process's environment."""
    settings = json.loads(os.environ.get(ENVIRONMENT) or "{}")
    speed = float(settings.get("speeds", {}).get(context.name, 1.0))
    scale = float(settings.get("time_scale", 1.0))
    engine = Engine(EngineModel(speed=speed, time_scale=scale))
    return InferenceApp(context.name, tokens=32, engine=engine)
