"""Every number and string a user passes is checked at construction, with a typed error that
names the argument (pure: no sockets, no processes)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest

from headlesslb.core import validate
from headlesslb.core.ewma import PeakEwmaEstimator
from headlesslb.core.health import HealthCheck
from headlesslb.core.names import (
    nameservers_from,
    parse_nameserver,
    validate_domain,
    validate_label,
    validate_statefulset,
)
from headlesslb.core.pickers import ConsistentHash, PeakEwma
from headlesslb.core.pool import OutlierPolicy
from headlesslb.core.retry import RetryBudget, RetryPolicy
from headlesslb.core.schedule import RefreshPolicy
from headlesslb.errors import ConfigurationError
from headlesslb.testing import LocalCluster

NAN = math.nan
INF = math.inf

# Values that are wrong for any number field, whatever its range.
NOT_A_NUMBER: list[object] = [NAN, INF, -INF, True, False, "5", b"5", [1.0], 10**400]
NOT_A_COUNT: list[object] = [NAN, INF, 2.5, 3.0, True, False, "5", None, [3]]
NOT_A_FLAG: list[object] = [1, 0, "yes", "", None, 1.0]


def _id(value: object) -> str:
    # Sets print in hash order, which differs per process: test ids must not (pytest-xdist
    # workers each collect the suite and must agree on every id).
    if isinstance(value, set | frozenset):
        return f"{type(value).__name__}({sorted(value, key=repr)!r})"
    return repr(value)


def cases(cls: Callable[..., object], field: str, values: list[object]) -> list[Any]:
    return [
        pytest.param(cls, field, value, id=f"{cls.__name__}.{field}={_id(value)}"[:80])
        for value in values
    ]


POSITIVE = [*NOT_A_NUMBER, None, -1, 0, -0.0]  # > 0 required, None not allowed
POSITIVE_OR_NONE = [*NOT_A_NUMBER, -1, 0]
NON_NEGATIVE = [*NOT_A_NUMBER, None, -1, -1e-9]
FRACTION = [*NOT_A_NUMBER, None, -0.1, 1, 1.5]  # 0 <= x < 1
PERCENT = [*NOT_A_NUMBER, None, -1, 100.5, 1000]
STATUS_SETS = [{99}, {600}, {True}, {"503"}, {503.0}, "503", 503, None, {None}]
METHOD_SETS = ["GET", {"get"}, {"GE T"}, {""}, {1}, None, 5, {"GET\r\n"}]

BAD_FIELDS = [
    # RetryPolicy
    *cases(RetryPolicy, "max_attempts", [*NOT_A_COUNT, -1, 0]),
    *cases(RetryPolicy, "per_try_timeout", POSITIVE_OR_NONE),
    *cases(RetryPolicy, "deadline", POSITIVE_OR_NONE),
    *cases(RetryPolicy, "retry_statuses", STATUS_SETS),
    *cases(RetryPolicy, "backoff_base", NON_NEGATIVE),
    *cases(RetryPolicy, "backoff_max", [*NON_NEGATIVE, 0.01]),  # 0.01 < backoff_base 0.02
    *cases(RetryPolicy, "budget_ratio", NON_NEGATIVE),
    *cases(RetryPolicy, "budget_min_per_second", NON_NEGATIVE),
    *cases(RetryPolicy, "idempotent_methods", METHOD_SETS),
    # RefreshPolicy
    *cases(RefreshPolicy, "min_interval", [*POSITIVE, 31]),  # 31 > max_interval 30
    *cases(RefreshPolicy, "max_interval", [*POSITIVE, 0.5]),  # 0.5 < min_interval 1
    *cases(RefreshPolicy, "jitter", FRACTION),
    *cases(RefreshPolicy, "error_backoff", [*POSITIVE, 11]),  # 11 > max_error_backoff 10
    *cases(RefreshPolicy, "max_error_backoff", [*POSITIVE, 0.4]),  # 0.4 < error_backoff 0.5
    *cases(RefreshPolicy, "early_min_interval", NON_NEGATIVE),
    *cases(RefreshPolicy, "first_resolution_timeout", POSITIVE),
    # OutlierPolicy
    *cases(OutlierPolicy, "consecutive_failures", [*NOT_A_COUNT, -1, 0]),
    *cases(OutlierPolicy, "base_ejection", [*POSITIVE, 301]),  # 301 > max_ejection 300
    *cases(OutlierPolicy, "max_ejection", [*POSITIVE, 9]),  # 9 < base_ejection 10
    *cases(OutlierPolicy, "max_ejection_percent", PERCENT),
    *cases(OutlierPolicy, "panic_threshold", PERCENT),
    *cases(OutlierPolicy, "jitter", FRACTION),
    *cases(OutlierPolicy, "eject_on_refused", NOT_A_FLAG),
    *cases(OutlierPolicy, "latency_decay", POSITIVE),
    # HealthCheck
    *cases(
        HealthCheck,
        "path",
        [
            "healthz",
            "",
            "/health z",
            "/health\tz",
            "/healthz\n",
            "/healthz\r\nX-Injected: 1",
            "/health\x00",
            "/health\x7f",
            "/health\u2028",
            "/healthz#ready",
            None,
            5,
            b"/healthz",
        ],
    ),
    *cases(HealthCheck, "interval", POSITIVE),
    *cases(HealthCheck, "timeout", POSITIVE),
    *cases(HealthCheck, "healthy_threshold", [*NOT_A_COUNT, -1, 0]),
    *cases(HealthCheck, "unhealthy_threshold", [*NOT_A_COUNT, -1, 0]),
    *cases(HealthCheck, "concurrency", [*NOT_A_COUNT, -1, 0]),
    *cases(HealthCheck, "start_unhealthy", NOT_A_FLAG),
    *cases(HealthCheck, "uneject_on_pass", NOT_A_FLAG),
    *cases(
        HealthCheck,
        "healthy_statuses",
        [*STATUS_SETS, range(0, 100), range(200, 700), range(200, 200), set(), frozenset()],
    ),
    # pickers
    *cases(ConsistentHash, "table_size_factor", [*NOT_A_COUNT, -1, 0]),
    *cases(ConsistentHash, "table_size", [*NOT_A_NUMBER, 2.5, 7.0, 1, 0, -7, 4, 65536, 5000077]),
    *cases(ConsistentHash, "over", ["endpoints", "", None, 1]),
    *cases(PeakEwmaEstimator, "decay", POSITIVE),
    *cases(PeakEwma, "default_rtt", POSITIVE),
    # RetryBudget
    *cases(RetryBudget, "ratio", NON_NEGATIVE),
    *cases(RetryBudget, "min_per_second", NON_NEGATIVE),
    *cases(RetryBudget, "max_banked", NON_NEGATIVE),
]


@pytest.mark.parametrize(("cls", "field", "value"), BAD_FIELDS)
def test_bad_value_is_a_configuration_error_naming_the_field(
    cls: Callable[..., object], field: str, value: object
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"{cls.__name__}.{field}")):
        cls(**{field: value})


GOOD_FIELDS = [
    *cases(RetryPolicy, "max_attempts", [1, 10]),
    *cases(RetryPolicy, "per_try_timeout", [None, 0.001, 5]),
    *cases(RetryPolicy, "deadline", [None, 30]),
    *cases(RetryPolicy, "retry_statuses", [frozenset(), {503}, frozenset({500, 599})]),
    *cases(RetryPolicy, "backoff_base", [0, 0.25]),
    *cases(RetryPolicy, "budget_ratio", [0, 1, 2.5]),
    *cases(RetryPolicy, "idempotent_methods", [frozenset(), {"GET", "M-SEARCH"}, ["PUT"]]),
    *cases(RefreshPolicy, "jitter", [0, 0.99]),
    *cases(RefreshPolicy, "min_interval", [1e-6, 30]),
    *cases(RefreshPolicy, "early_min_interval", [0, 5]),
    *cases(OutlierPolicy, "max_ejection_percent", [0, 100]),
    *cases(OutlierPolicy, "panic_threshold", [0, 100]),
    *cases(OutlierPolicy, "eject_on_refused", [True, False]),
    *cases(HealthCheck, "path", ["/", "/healthz?full=1", "/a/b;c", "/ready%20now", "/héalth"]),
    *cases(HealthCheck, "healthy_statuses", [range(200, 300), range(100, 600), {200, 204}]),
    *cases(HealthCheck, "interval", [1, 0.05]),
    *cases(ConsistentHash, "table_size", [None, 2, 65537]),
    *cases(ConsistentHash, "table_size_factor", [1, 100]),
    *cases(PeakEwmaEstimator, "decay", [1, 0.5]),
    *cases(RetryBudget, "ratio", [0, 0.2]),
]


@pytest.mark.parametrize(("cls", "field", "value"), GOOD_FIELDS)
def test_good_value_is_accepted(cls: Callable[..., object], field: str, value: object) -> None:
    cls(**{field: value})


def test_message_says_the_rule_and_the_value() -> None:
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy(per_try_timeout=NAN)
    assert (
        str(info.value)
        == "RetryPolicy.per_try_timeout must be a finite number > 0 or None, not nan"
    )
    with pytest.raises(
        ConfigurationError, match=r"RetryPolicy\.max_attempts must be an int >= 1, not True"
    ):
        RetryPolicy(max_attempts=True)
    with pytest.raises(
        ConfigurationError, match=r"backoff_base \(1\) must be <= .*backoff_max \(0.5\)"
    ):
        RetryPolicy(backoff_base=1, backoff_max=0.5)


def test_collections_are_normalised_to_frozensets() -> None:
    check = HealthCheck(healthy_statuses={200, 204})
    assert check.healthy_statuses == frozenset({200, 204})
    hash(check)  # a frozen dataclass must stay hashable
    policy = RetryPolicy(retry_statuses={503}, idempotent_methods=["GET"])  # type: ignore[arg-type]
    assert policy.retry_statuses == frozenset({503})
    assert policy.idempotent_methods == frozenset({"GET"})
    hash(policy)
    assert HealthCheck().healthy_statuses == range(200, 400)  # a range stays a range


# -- the validators themselves --------------------------------------------------------------


class Index:
    """An int-like that is not an int (numpy.int64 behaves so)."""

    def __index__(self) -> int:
        return 7


def test_number() -> None:
    assert validate.number("x", 3) == 3
    assert validate.number("x", 0.5, min=0, max=1, exclusive_max=True) == 0.5
    assert validate.number("x", None, allow_none=True) is None
    for bad, kwargs in [
        (NAN, {}),
        (INF, {}),
        (-INF, {"min": None}),
        (None, {}),
        (True, {}),
        ("1", {}),
        (0, {"min": 0, "exclusive_min": True}),
        (1, {"max": 1, "exclusive_max": True}),
        (2, {"max": 1}),
    ]:
        with pytest.raises(ConfigurationError, match=r"^x must be a finite number"):
            validate.number("x", bad, **kwargs)  # type: ignore[call-overload]


def test_count() -> None:
    assert validate.count("n", 3) == 3
    assert validate.count("n", Index()) == 7
    assert validate.count("n", None, allow_none=True) is None
    for bad in [True, 2.5, 2.0, "2", None, NAN, -1]:
        with pytest.raises(ConfigurationError, match=r"^n must be an int >= 0"):
            validate.count("n", bad)
    with pytest.raises(ConfigurationError, match=r"^n must be an int >= 1 and <= 5, not 6$"):
        validate.count("n", 6, min=1, max=5)


def test_flag() -> None:
    assert validate.flag("f", False) is False
    with pytest.raises(ConfigurationError, match=r"^f must be True or False, not 1$"):
        validate.flag("f", 1)


def test_request_path_rejects_what_cannot_be_sent() -> None:
    assert validate.request_path("p", "/x?y=1") == "/x?y=1"
    for bad in ["x", "/a b", "/a\r\nHost: evil", "/a#b", "/\u00a0", 1]:
        with pytest.raises(ConfigurationError, match=r"^p must"):
            validate.request_path("p", bad)


def test_status_codes_and_methods() -> None:
    assert validate.status_codes("s", range(200, 300)) == range(200, 300)
    assert validate.status_codes("s", [200, 201]) == frozenset({200, 201})
    with pytest.raises(ConfigurationError, match=r"^s must not be empty"):
        validate.status_codes("s", [], allow_empty=False)
    assert validate.http_methods("m", ("GET", "PUT")) == frozenset({"GET", "PUT"})
    with pytest.raises(ConfigurationError, match=r"^m must be a set of HTTP method names"):
        validate.http_methods("m", "GET")


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "10.0.0.1%eth0",  # a zone id goes on an IPv6 address
        "[fe80::1%]:53",
        "1.1.1.1:0",
        "1.1.1.1:65536",
        "1.1.1.1:٥٣",  # Arabic-Indic digits: str.isdigit() says yes
        "1.1.1.1:¹",  # superscript one: isdigit() says yes, int() raises ValueError
        "1.1.1.1:+53",
        "1.1.1.1: 53",
        "1.1.1.1 :53",
        "[::1] :53",
        "1.1.1.1\t53",
        "1.1.1.1:",
        "[::1]:",
        "",
        53,
        None,
        b"1.1.1.1",
        ("1.1.1.1", 53),
    ],
)
def test_parse_nameserver_rejects(spec: object) -> None:
    with pytest.raises(ConfigurationError, match="nameserver"):
        parse_nameserver(spec)  # type: ignore[arg-type]


def test_parse_nameserver_accepts() -> None:
    assert parse_nameserver(" 10.0.0.10 ") == ("10.0.0.10", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:65535") == ("::1", 65535)
    assert parse_nameserver("fd00::a") == ("fd00::a", 53)
    # Zone ids are kept in the ip text; whether the interface exists is asked at construction.
    assert parse_nameserver("fe80::1%eth0") == ("fe80::1%eth0", 53)
    assert parse_nameserver("[FE80::0001%eth0]:5353") == ("fe80::1%eth0", 5353)
    assert parse_nameserver("[fe80::1%1]") == ("fe80::1%1", 53)


@pytest.mark.parametrize(
    "specs", [[53], [None], ["1.1.1.1", 53], None, 53, b"1.1.1.1", {"1.1.1.1": 1}, [b"1.1.1.1"]]
)
def test_nameservers_from_rejects(specs: object) -> None:
    with pytest.raises(ConfigurationError, match="nameservers"):
        nameservers_from(specs)  # type: ignore[arg-type]


def test_nameservers_from_names_the_bad_entry() -> None:
    with pytest.raises(ConfigurationError, match=r"nameservers\[1\]"):
        nameservers_from(["1.1.1.1", "1.1.1.1:0"])
    assert nameservers_from(("1.1.1.1", "[::1]:5353")) == (("1.1.1.1", 53), ("::1", 5353))


@pytest.mark.parametrize(
    "value", ["", "Web", "web_1", "-web", "web-", "web.hl", "a" * 64, " web", None, 5, "wéb"]
)
def test_validate_label_rejects(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"^namespace "):
        validate_label("namespace", value)


def test_statefulset_name_leaves_room_for_the_ordinal() -> None:
    assert validate_statefulset("statefulset", "a" * 52) == "a" * 52
    assert validate_label("namespace", "a" * 63) == "a" * 63
    with pytest.raises(ConfigurationError, match=r"^statefulset .*52"):
        validate_statefulset("statefulset", "a" * 53)
    with pytest.raises(ConfigurationError, match=r"^statefulset "):
        validate_statefulset("statefulset", "Web")


def test_validate_domain() -> None:
    assert validate_domain("domain", "cluster.local") == "cluster.local"
    assert validate_domain("domain", "Cluster.Local.") == "cluster.local"
    for bad in ["", ".", "cluster..local", "clus ter.local", "-x.local", "a" * 64 + ".local", 5]:
        with pytest.raises(ConfigurationError, match=r"^domain "):
            validate_domain("domain", bad)


# -- LocalCluster: checked before any process is started ------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ttl", -1),
        ("ttl", True),
        ("ttl", 2.5),
        ("ttl", "5"),
        ("ttl", NAN),
        ("ttl", 2**31),
        ("startup_timeout", NAN),
        ("startup_timeout", INF),
        ("startup_timeout", 0),
        ("startup_timeout", -1),
        ("startup_timeout", "5"),
        ("startup_timeout", None),
        ("namespace", "Bad_NS"),
        ("namespace", ""),
        ("namespace", None),
        ("namespace", "a.b"),
        ("domain", "cluster..local"),
        ("domain", ""),
        ("domain", "clus ter.local"),
        ("domain", None),
    ],
)
def test_local_cluster_arguments(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"LocalCluster.{field}")):
        LocalCluster(**{field: value})  # type: ignore[arg-type]
