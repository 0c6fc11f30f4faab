"""An inference fleet: time to first token by balancing policy, on the same Pods in one run.

Four Pods (a StatefulSet, ``llm-0`` … ``llm-3``) serve the SDKs' OpenAI-compatible inference
app paced by the timing model of ``headlesslb/testing/_inference_model.py`` (a
continuous-batching engine of 8 sequences, a waiting queue, chunked prefill of what its LRU
prefix cache lacks, 32-token answers streamed as SSE, ORCA reports in vLLM's style; constants
from a public vLLM benchmark of Llama-3.1-8B on one A100, cited there). ``llm-3`` runs at half
speed. Time is scaled uniformly (``--time-scale``, 0.25: four times faster than the modelled
GPU); every time below is in model seconds (wall ÷ scale).

The workload, one seeded sequence replayed for every policy: multi-turn chat, 120
conversations whose popularity is Zipf (s = 1.1); each request is the next turn of one (a
600-token system prompt, then 120 user tokens and 32 answer tokens a turn; a conversation past
4,000 tokens starts over, cold). Requests arrive open-loop (Poisson) at two offered loads,
``--loads`` (0.5 and 0.9) of the fleet's capacity, measured first: the requests a second it
serves saturated under round-robin (a closed loop of twice as many workers as it has sequence
slots, ``--calibrate`` seconds). Each round replays the same arrivals: ``--warmup`` seconds
that fill the caches and are not measured, then ``--duration`` seconds measured; requests still
unanswered ``--drain`` seconds after the last arrival are counted ``unfinished`` (and left out of
the percentiles: a policy with unfinished requests is worse than its p99 says). Every
conversation's header ``x-session-id`` names it.

Policies, side by side within a round (each round starts with every Pod's cache and counters
emptied):

- ``clusterip``: a plain httpx client through the ClusterIP/LB Service (connection-level);
- ``round_robin``, ``least_request``, ``peak_ewma``: headlesslb's balancing pickers;
- ``affinity``: ``key_from=KeyFrom.header("x-session-id")``, Maglev (``ConsistentHash()``);
- ``affinity_bounded``: the same with ``ConsistentHash(balance_factor=1.25)``;
- ``wrr_orca``: ``WeightedRoundRobin`` on the Pods' ORCA reports (blackout 1 s, weights
  recomputed every 0.25 s: A58's 10 s blackout would take the whole round);
- ``least_loaded``: ``LeastLoaded()``, P2C on in-flight + vLLM's ``num_requests_waiting``.

Per policy: TTFT p50/p99, end-to-end p99, prefix-cache hit rate (cached ÷ prompt tokens, from
the usage chunk), max/mean Pod utilization (each Pod's running-sequence time ÷ its 8 slots ×
the round, as the Pod counts it), goodput (requests a second meeting TTFT ≤ 1 s and time per
output token ≤ 50 ms, DistServe-style), and each as a ratio to round-robin in the same round.
Targets (issue 22): the best policy at 90 % load, TTFT p50 ≤ 0.5× and p99 ≤ 0.8× round-robin;
WRR with one Pod at half speed, max/mean utilization ≤ 1.1.

    python benchmarks/inference.py [--duration 4.5] [--time-scale 0.25] [--loads 0.5,0.9]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from _common import print_table, write_results

from headlesslb import ConsistentHash, HeadlessClient, KeyFrom, LeastLoaded, WeightedRoundRobin
from headlesslb.testing import LocalCluster
from headlesslb.testing._inference_model import ENVIRONMENT, EngineModel

PODS = 4
SLOW_POD = "llm-3"
SLOW_SPEED = 0.5
SESSIONS = 120
ZIPF_S = 1.1
SYSTEM_TOKENS = 600
USER_TOKENS = 120
OUTPUT_TOKENS = 32
MAX_CONTEXT = 4000
TTFT_SLO = 1.0
TPOT_SLO = 0.05
SESSION = KeyFrom.header("x-session-id")
POLICIES = (
    "clusterip",
    "round_robin",
    "least_request",
    "peak_ewma",
    "affinity",
    "affinity_bounded",
    "wrr_orca",
    "least_loaded",
)


@dataclass(frozen=True, slots=True)
class Turn:
    """One request of the workload."""

    at: float
    """Wall seconds after the round starts."""
    session: str
    prompt: int


def workload(rate: float, duration: float, seed: int) -> list[Turn]:
    """The seeded open-loop arrivals of one round: Poisson at ``rate`` a wall second."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** ZIPF_S for rank in range(SESSIONS)]
    turns = [0] * SESSIONS
    epochs = [0] * SESSIONS
    out: list[Turn] = []
    now = rng.expovariate(rate)
    while now < duration:
        rank = rng.choices(range(SESSIONS), weights)[0]
        prompt = SYSTEM_TOKENS + turns[rank] * (USER_TOKENS + OUTPUT_TOKENS) + USER_TOKENS
        if prompt > MAX_CONTEXT:
            turns[rank], epochs[rank] = 0, epochs[rank] + 1
            prompt = SYSTEM_TOKENS + USER_TOKENS
        turns[rank] += 1
        out.append(Turn(now, f"conv-{rank}-{epochs[rank]}", prompt))
        now += rng.expovariate(rate)
    return out


async def capacity(cluster: LocalCluster, scale: float, seconds: float, seed: int) -> float:
    """Requests a model second the fleet serves when saturated under round-robin: a closed
    loop of twice as many workers as the fleet has sequence slots, on the same workload,
    counted after its first second."""
    turns = iter(workload(1.0, 1e6, seed + 1))
    done: list[float] = []
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        await _reset(cluster, http)
    async with _client("round_robin", cluster) as client:
        await client.wait_ready(10)
        begin = time.perf_counter()

        async def worker() -> None:
            while time.perf_counter() - begin < seconds:
                turn = next(turns)
                async with client.stream(
                    "POST",
                    "/v1/chat/completions",
                    json=_body(turn),
                    headers={"x-session-id": turn.session},
                ) as response:
                    await _read(response, time.perf_counter(), turn)
                done.append(time.perf_counter() - begin)

        async with anyio.create_task_group() as tg:
            for _ in range(2 * PODS * EngineModel().max_seqs):
                tg.start_soon(worker)
    counted = [t for t in done if 1.0 <= t <= seconds]
    return len(counted) / ((seconds - 1.0) / scale)


@dataclass
class Result:
    """One request's measurements (wall seconds)."""

    ttft: float
    e2e: float
    pod: str
    prompt: int
    cached: int


@dataclass
class Round:
    """What one policy measured in one round."""

    results: list[Result] = field(default_factory=list)
    failures: int = 0
    utilization: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0


Stream = Callable[[Turn], Awaitable[Result]]


async def _read(response: httpx.Response, started: float, turn: Turn) -> Result:
    first: float | None = None
    usage: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        document = json.loads(line[6:])
        choices = document.get("choices")
        if first is None and choices and choices[0]["delta"].get("content"):
            first = time.perf_counter()  # the first token (not the opening, role-only chunk)
        if document.get("usage"):
            usage = document["usage"]
    end = time.perf_counter()
    assert first is not None, "no token came"
    cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    return Result(first - started, end - started, response.headers["x-pod"], turn.prompt, cached)


def _body(turn: Turn) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "…"}],
        "prompt_tokens": turn.prompt,
        "max_tokens": OUTPUT_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _client(policy: str, cluster: LocalCluster) -> Any:
    kwargs: dict[str, Any] = {"port": "http", **cluster.client_kwargs()}
    kwargs["timeout"] = httpx.Timeout(60.0)
    if policy in ("round_robin", "least_request", "peak_ewma"):
        return HeadlessClient("llm-hl", picker=policy, **kwargs)
    if policy == "affinity":
        return HeadlessClient("llm-hl", key_from=SESSION, **kwargs)
    if policy == "affinity_bounded":
        sharding = ConsistentHash(balance_factor=1.25)
        return HeadlessClient("llm-hl", key_from=SESSION, sharding=sharding, **kwargs)
    if policy == "wrr_orca":
        wrr = WeightedRoundRobin(blackout_period=1.0, weight_update_period=0.25)
        return HeadlessClient("llm-hl", picker=wrr, **kwargs)
    if policy == "least_loaded":
        return HeadlessClient("llm-hl", picker=LeastLoaded(), **kwargs)
    raise ValueError(policy)


async def _reset(cluster: LocalCluster, http: httpx.AsyncClient, path: str = "/reset") -> None:
    for i in range(PODS):
        (await http.post(cluster.url(f"llm-{i}", path))).raise_for_status()


async def _utilization(
    cluster: LocalCluster, http: httpx.AsyncClient, model_seconds: float
) -> dict[str, float]:
    out = {}
    for i in range(PODS):
        stats = (await http.get(cluster.url(f"llm-{i}", "/stats"))).json()
        out[stats["pod"]] = stats["sequence_seconds"] / (stats["max_seqs"] * model_seconds)
    return out


async def run_round(
    cluster: LocalCluster,
    policy: str,
    turns: list[Turn],
    scale: float,
    warmup: float,
    drain: float,
) -> Round:
    """Replay ``turns`` through ``policy``'s client on freshly emptied Pods; what arrives in
    the first ``warmup`` seconds fills the caches and is not measured."""
    result = Round()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        await _reset(cluster, http)
        if policy == "clusterip":
            client: Any = httpx.AsyncClient(
                base_url=cluster.service_url("llm-lb"), trust_env=False, timeout=60
            )
        else:
            client = _client(policy, cluster)
        async with client:
            if isinstance(client, HeadlessClient):
                await client.wait_ready(10)

            async def one(turn: Turn) -> None:
                started = time.perf_counter()
                try:
                    async with client.stream(
                        "POST",
                        "/v1/chat/completions",
                        json=_body(turn),
                        headers={"x-session-id": turn.session},
                    ) as response:
                        response.raise_for_status()
                        measured = await _read(response, started, turn)
                except (httpx.HTTPError, AssertionError):
                    return
                if turn.at >= warmup:
                    result.results.append(measured)

            begin = time.perf_counter()
            warm = False
            with anyio.move_on_after(turns[-1].at + drain if turns else drain):
                async with anyio.create_task_group() as tg:
                    for turn in turns:
                        delay = begin + turn.at - time.perf_counter()
                        if delay > 0:
                            await anyio.sleep(delay)
                        if not warm and turn.at >= warmup:
                            warm = True
                            await _reset(cluster, http, "/reset-stats")
                            stats_from = time.perf_counter()
                        tg.start_soon(one, turn)
            if not warm:
                stats_from = begin
            result.elapsed = time.perf_counter() - stats_from
            result.failures = sum(1 for t in turns if t.at >= warmup) - len(result.results)
        result.utilization = await _utilization(cluster, http, result.elapsed / scale)
    return result


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def summarize(
    policy: str, load: float, measured: Round, scale: float, duration: float
) -> dict[str, Any]:
    """One row of the table (times in model seconds)."""
    results = measured.results
    ttft = [r.ttft / scale for r in results]
    e2e = [r.e2e / scale for r in results]
    good = sum(
        1
        for r in results
        if r.ttft / scale <= TTFT_SLO
        and (r.e2e - r.ttft) / scale / max(1, OUTPUT_TOKENS - 1) <= TPOT_SLO
    )
    prompt = sum(r.prompt for r in results) or 1
    utilization = list(measured.utilization.values())
    mean = sum(utilization) / len(utilization) if utilization else math.nan
    return {
        "load": load,
        "policy": policy,
        "requests": len(results),
        "unfinished": measured.failures,
        "ttft_p50": _quantile(ttft, 0.5),
        "ttft_p99": _quantile(ttft, 0.99),
        "e2e_p99": _quantile(e2e, 0.99),
        "cache_hit": sum(r.cached for r in results) / prompt,
        "max_mean_util": max(utilization) / mean if mean else math.nan,
        "goodput": good / (duration / scale),
        "slow_pod_share": sum(1 for r in results if r.pod == SLOW_POD) / max(1, len(results)),
    }


def with_ratios(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each row with its ratios to round-robin's row of the same load."""
    for row in rows:
        base = next(r for r in rows if r["load"] == row["load"] and r["policy"] == "round_robin")
        out = dict(row)
        for name in ("ttft_p50", "ttft_p99", "e2e_p99", "goodput"):
            out[f"{name}_x_rr"] = row[name] / base[name] if base[name] else math.nan
        yield out


async def main(args: argparse.Namespace) -> None:
    """Run every policy at every load on the same Pods; print and write the table."""
    model = EngineModel(time_scale=args.time_scale)
    probe = workload(1.0, 2000.0, args.seed)
    mean_prompt = sum(t.prompt for t in probe) / len(probe)
    os.environ[ENVIRONMENT] = json.dumps(
        {"time_scale": args.time_scale, "speeds": {SLOW_POD: SLOW_SPEED}}
    )
    policies = args.policies.split(",")
    rows = []
    with LocalCluster(ttl=30) as cluster:
        cluster.add_statefulset(
            "llm", replicas=PODS, app="headlesslb.testing._inference_model:app", factory=True
        )
        fleet = await capacity(cluster, args.time_scale, args.calibrate, args.seed)
        print(f"capacity (round-robin, saturated): {fleet:.1f} requests a model second")
        for load in (float(x) for x in args.loads.split(",")):
            rate = load * fleet / args.time_scale
            turns = workload(rate, args.warmup + args.duration, args.seed)
            for policy in policies:
                measured = await run_round(
                    cluster, policy, turns, args.time_scale, args.warmup, args.drain
                )
                row = summarize(policy, load, measured, args.time_scale, args.duration)
                rows.append(row)
                print(
                    f"load {load:.0%} {policy:17s} {row['requests']:4d} requests,"
                    f" TTFT p50 {row['ttft_p50']:.3f} s p99 {row['ttft_p99']:.3f} s,"
                    f" hit {row['cache_hit']:.0%}, util max/mean {row['max_mean_util']:.2f}",
                    flush=True,
                )
    table = list(with_ratios(rows))
    print_table(table, title="inference fleet (model seconds; _x_rr: ratio to round_robin)")
    write_results(
        "inference",
        table,
        params={
            **vars(args),
            "pods": PODS,
            "slow_pod": SLOW_POD,
            "slow_speed": SLOW_SPEED,
            "sessions": SESSIONS,
            "zipf_s": ZIPF_S,
            "mean_prompt_tokens": mean_prompt,
            "fleet_capacity_rps_model": fleet,
            "model": {
                "decode_step_1": model.decode_step_1,
                "decode_step_full": model.decode_step_full,
                "max_seqs": model.max_seqs,
                "prefill_rate": model.prefill_rate,
                "cache_tokens": model.cache_tokens,
                "chunk_tokens": model.chunk_tokens,
            },
        },
        target={
            "best_ttft_p50_x_rr_at_0.9": 0.5,
            "best_ttft_p99_x_rr_at_0.9": 0.8,
            "wrr_orca_max_mean_util": 1.1,
        },
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=float, default=2.5, help="wall seconds unmeasured")
    parser.add_argument("--duration", type=float, default=4.5, help="wall seconds measured")
    parser.add_argument("--drain", type=float, default=4.0, help="wall seconds to finish after")
    parser.add_argument(
        "--calibrate", type=float, default=5.0, help="wall seconds measuring capacity"
    )
    parser.add_argument("--time-scale", type=float, default=0.25)
    parser.add_argument("--loads", default="0.5,0.9")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--seed", type=int, default=22)
    return parser.parse_args()


if __name__ == "__main__":
    anyio.run(main, _arguments())
