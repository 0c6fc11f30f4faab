"""The public API is typed like httpx's: mypy accepts what httpx accepts and catches typos.

Runs mypy --strict on small user programs (and on the README's first example), so a misspelt
keyword argument, a wrong picker name or a wrong report key fails type checking, as it would
on plain httpx. The repository's own .mypy_cache keeps this fast after `make typecheck`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from headlesslb.core.pickers import PICKERS, PickerName

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
import httpx
from headlesslb import HeadlessClient, HeadlessTransport, Report, ConsistentHash
from headlesslb import KeyFrom, LeastLoaded, WeightedRoundRobin
from headlesslb import sync
from headlesslb.testing import LocalCluster


async def use_async(cluster: LocalCluster) -> None:
    async with HeadlessClient(
        "web-hl", port="http", picker="peak_ewma", sharding=ConsistentHash(over="ordinal"),
        timeout=httpx.Timeout(5.0), **cluster.client_kwargs(),
    ) as client:
        r = await client.get("/a", key="user-1", params={"q": 1}, headers={"x": "y"},
                             timeout=3.0, follow_redirects=True, cookies={"c": "d"})
        r = await client.post("/b", json={"a": 1}, ordinal=0, idempotent=True)
        r = await client.put("/c", content=b"x", auth=("u", "p"))
        r = await client.patch("/d", data={"k": "v"}, files={"f": b"data"})
        r = await client.delete("/e", extensions={"trace": 1})
        r = await client.request("OPTIONS", "/f", key=b"raw")
        async with client.stream("GET", "/g", key=7) as streamed:
            async for _chunk in streamed.aiter_bytes():
                pass
        report: Report = r.extensions["headlesslb"]
        hostname: str | None = report["hostname"]
        for attempt in report["attempts"]:
            endpoint: str = attempt["endpoint"]
        print(hostname, endpoint, report.get("service"))
    HeadlessTransport("web-hl", picker="least_request")
    HeadlessTransport(
        "llm-hl", picker=WeightedRoundRobin(blackout_period=5.0),
        key_from=KeyFrom.first(KeyFrom.header("x-session-id"), KeyFrom.cookie("sid")),
    )
    HeadlessClient(
        "llm-hl", picker=LeastLoaded(metric="kv_cache_usage_perc", metric_weight=10.0),
        key_from=lambda request: request.headers.get("x-tenant"),
    )


def use_sync() -> None:
    with sync.HeadlessClient("web-hl", port=8080, picker="round_robin") as client:
        client.get("/a", key="k", params=[("a", "b")], headers=[("x", "y")])
        client.post("/b", json=[1, 2], timeout=None)
"""

BAD = {
    "misspelt-request-keyword": 'await client.get("/a", kye="user-1")',
    "misspelt-httpx-keyword": 'await client.post("/a", josn={})',
    "body-on-get": 'await client.get("/a", json={})',
    "wrong-option-type": 'await client.get("/a", ordinal="2")',
    "unknown-picker": 'HeadlessClient("web-hl", picker="round_robbin")',
    "misspelt-client-option": 'HeadlessClient("web-hl", fallbak="web-lb")',
    "misspelt-report-key": 'print(report["hostnme"])',
    "sync-misspelt-keyword": 'sync.HeadlessClient("web-hl").get("/a", ordnal=1)',
    "key-from-a-string": 'HeadlessClient("web-hl", key_from="x-session-id")',
    "key-from-a-float-key": 'HeadlessClient("web-hl", key_from=lambda request: 1.5)',
}

BAD_TEMPLATE = """
from headlesslb import HeadlessClient, Report
from headlesslb import sync


async def main(client: HeadlessClient, report: Report) -> None:
    {line}
"""


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None
    return block.group(1)


def _mypy(files: list[Path]) -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *map(str, files)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    errors: dict[str, list[str]] = {path.stem: [] for path in files}
    for line in result.stdout.splitlines():
        match = re.match(r"(.+?\.py):\d+: error: (.*)", line)
        if match:
            errors[Path(match.group(1)).stem].append(match.group(2))
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return errors


@pytest.mark.slow
def test_mypy_accepts_httpx_style_calls_and_catches_typos(tmp_path: Path) -> None:
    files = [tmp_path / "good.py", tmp_path / "readme.py"]
    files[0].write_text(GOOD)
    files[1].write_text(_readme_example())
    for name, line in BAD.items():
        path = tmp_path / f"bad_{name.replace('-', '_')}.py"
        path.write_text(BAD_TEMPLATE.format(line=line))
        files.append(path)
    errors = _mypy(files)
    assert errors.pop("good") == []
    assert errors.pop("readme") == []
    expected = {
        "bad_misspelt_request_keyword": 'Unexpected keyword argument "kye"',
        "bad_misspelt_httpx_keyword": 'Unexpected keyword argument "josn"',
        "bad_body_on_get": 'Unexpected keyword argument "json"',
        "bad_wrong_option_type": 'Argument "ordinal"',
        "bad_unknown_picker": 'Argument "picker"',
        "bad_misspelt_client_option": 'Unexpected keyword argument "fallbak"',
        "bad_misspelt_report_key": '"hostnme"',
        "bad_sync_misspelt_keyword": 'Unexpected keyword argument "ordnal"',
    }
    for name, message in expected.items():
        assert any(message in error for error in errors[name]), (name, errors[name])


def test_picker_names_are_the_built_in_ones() -> None:
    assert set(get_args(PickerName)) == set(PICKERS)
