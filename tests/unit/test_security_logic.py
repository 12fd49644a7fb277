"""Security detection logic without a database: config checked at the door, the EWMA
baseline arithmetic, windows, and the mapping of source rows to events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.security.findings import (
    Baseline,
    Finding,
    decay,
    floor_time,
    merge_by_window,
    observe,
    zscore,
)
from core.security.sources import BadEvent, canonical
from models.config import ConfigError, parse_config
from models.config_security import SourceConfig

T = datetime(2026, 11, 20, 1, 2, 3, tzinfo=UTC)


def problems(security: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config({"security": security})
    return error.value.problems


def test_a_source_needs_exactly_one_of_query_or_file() -> None:
    assert problems({"sources": [{"name": "a", "stream": "auth"}]}) == [
        "security.sources[0]: give exactly one of `query` or `file`"
    ]
    assert problems(
        {"sources": [{"name": "a", "stream": "auth", "query": "SELECT 1", "file": "/x"}]}
    ) == ["security.sources[0]: give exactly one of `query` or `file`"]


def test_a_source_query_must_be_a_select() -> None:
    (problem,) = problems(
        {"sources": [{"name": "a", "stream": "auth", "query": "DELETE FROM auth_events"}]}
    )
    assert problem == "security.sources[0]: query must be a SELECT (or WITH ... SELECT)"


def test_unknown_mapped_fields_are_named_with_the_known_ones() -> None:
    (problem,) = problems(
        {"sources": [{"name": "a", "stream": "api", "file": "/x", "fields": {"url": "u"}}]}
    )
    assert "unknown field(s) url for stream 'api'" in problem
    assert "known: id, at, ip, key, method, path, status" in problem


def test_duplicate_source_names_are_refused() -> None:
    source = {"name": "a", "stream": "auth", "file": "/x"}
    (problem,) = problems({"sources": [source, source]})
    assert problem == "security.sources: [1]: duplicate source name 'a'"


def test_bad_ignoreip_and_durations_name_the_field() -> None:
    assert problems({"failed_logins": {"ignoreip": ["10.0.0.300"]}}) == [
        "security.failed_logins.ignoreip: '10.0.0.300' is not an IP address or CIDR range"
    ]
    assert problems({"failed_logins": {"findtime": "0s"}}) == [
        "security.failed_logins.findtime: must be positive"
    ]
    assert problems({"failed_logins": {"bantime": "soon"}}) == [
        "security.failed_logins.bantime: must be a duration such as 30s, 5m or 1h"
    ]


def test_events_must_be_kept_longer_than_the_longest_detector_window() -> None:
    (problem,) = problems({"keep_events": "1h"})
    assert problem.startswith("security: keep_events: 1:00:00 is shorter than ")
    assert "plus settle (1:01:00)" in problem
    assert problems({"first_lookback": "0s"}) == ["security.first_lookback: must be positive"]
    assert parse_config({"security": {"keep_events": "2h"}}).security.keep_events.days == 0


def test_ignoreip_is_normalised_to_networks_postgres_accepts() -> None:
    config = parse_config({"security": {"failed_logins": {"ignoreip": ["10.1.2.3/8", "::1"]}}})
    assert config.security.failed_logins.ignoreip == ["10.0.0.0/8", "::1/128"]


def test_the_shipped_config_has_the_three_demo_sources(repo_root: Path) -> None:
    from models.config import load_config

    config = load_config(repo_root / "config" / "eventops.yaml")
    assert [(s.name, s.stream) for s in config.security.sources] == [
        ("auth", "auth"),
        ("api", "api"),
        ("access", "access"),
    ]


def auth_source(**fields: str) -> SourceConfig:
    return SourceConfig(name="auth", stream="auth", file=Path("/x"), fields=fields)


def test_rows_map_to_events_through_the_field_mapping() -> None:
    source = auth_source(account="email", outcome="kind")
    row = canonical(
        source,
        {"at": "2026-11-20T01:02:03Z", "ip": "203.0.113.5", "email": "A@Example.test",
         "kind": "login_failure"},
        "7",
    )  # fmt: skip
    assert row["at"] == T
    assert row["account"] == "a@example.test"
    assert row["kind"] == "failure"
    assert row["ip"] == "203.0.113.5"
    assert canonical(source, {"at": 0, "email": "b", "kind": "ok"}, "8")["kind"] == "success"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"ip": "1.2.3.4", "account": "a", "outcome": "failure"}, "at (column 'at'): is missing"),
        (
            {"at": "2026-11-20 01:00:00", "account": "a", "outcome": "failure"},
            "at: has no time zone",
        ),
        ({"at": "noon", "account": "a", "outcome": "failure"}, "at: not an ISO 8601 time"),
        ({"at": 0, "ip": "300.1.1.1", "account": "a", "outcome": "failure"}, "ip: '300.1.1.1'"),
        ({"at": 0, "outcome": "failure"}, "account (column 'account'): is missing"),
    ],
)
def test_a_bad_row_names_the_field_and_the_reason(raw: dict[str, object], message: str) -> None:
    with pytest.raises(BadEvent, match=message.replace("(", r"\(").replace(")", r"\)")):
        canonical(auth_source(), raw, "1")


def test_api_status_must_be_http() -> None:
    source = SourceConfig(name="api", stream="api", file=Path("/x"))
    with pytest.raises(BadEvent, match="status: 999 is not an HTTP status"):
        canonical(source, {"at": 0, "path": "/", "status": 999}, "1")


def test_ewma_learns_a_steady_rate_and_scores_a_spike() -> None:
    baseline = Baseline(0.0, 0.0, 0, None)
    for value in [30.0, 28.0, 32.0, 29.0, 31.0] * 20:
        observe(baseline, value, 0.1)
    assert 29 < baseline.mean < 31
    assert zscore(baseline, 30.0, 2.0) < 1
    assert zscore(baseline, 400.0, 2.0) > 100


def test_quiet_buckets_decay_the_baseline_towards_zero() -> None:
    baseline = Baseline(100.0, 0.0, 50, T)
    decay(baseline, 1, 0.1)
    assert baseline.mean == pytest.approx(90.0)
    assert baseline.variance > 0  # the drop itself is variation
    decay(baseline, 10_000, 0.1)
    assert baseline.mean < 1e-6


def test_the_deviation_floor_keeps_a_flat_key_from_alarming_on_noise() -> None:
    flat = Baseline(10.0, 0.0, 100, T)
    assert zscore(flat, 12.0, 2.0) == pytest.approx(1.0)
    assert zscore(None, 40.0, 2.0) == pytest.approx(20.0)


def test_buckets_align_to_a_fixed_epoch() -> None:
    assert floor_time(T, timedelta(minutes=5)) == datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    assert floor_time(T, timedelta(hours=1)) == datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def finding(kind: str, severity: str, breach: bool = False) -> Finding:
    return Finding("data_access", kind, severity, "account:x", kind, T, T, {"n": kind},
                   breach=breach)  # fmt: skip


def test_kinds_of_one_subject_and_bucket_fold_into_the_most_severe() -> None:
    (merged,) = merge_by_window(
        [finding("unusual_hours", "warning"), finding("bulk_read", "critical", breach=True)]
    )
    assert merged.kind == "bulk_read"
    assert merged.severity == "critical"
    assert merged.breach
    assert merged.evidence["kinds"] == ["unusual_hours", "bulk_read"]
    assert merged.evidence["bulk_read"] == {"n": "bulk_read"}
    assert merged.fingerprint == "security:breach:data_access:account:x"
