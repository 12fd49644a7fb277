"""The dashboard's session cookies and login limiter, with an injected clock."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from web.auth import SESSION_MAX_AGE_S, Auth, LoginLimiter, dashboard_password, origin_of
from workers.settings import Settings, SettingsError, read_settings


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "var_dir": tmp_path,
        "dashboard_user": "ops",
        "dashboard_password": SecretStr("pw-one"),
        "dashboard_secret": SecretStr("k" * 32),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_a_signed_session_reads_back_and_any_tampering_voids_it(tmp_path: Path) -> None:
    auth = Auth(settings(tmp_path))
    session, cookie = auth.new_session("ops")
    assert auth.read_cookie(cookie, now=session.issued_at + 60) == session
    body, signature = cookie.rsplit(".", 1)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert auth.read_cookie(f"{body}.{flipped}") is None
    assert auth.read_cookie(f"{body[:-2]}xx.{signature}") is None
    assert auth.read_cookie("no-dot-at-all") is None
    assert auth.read_cookie(None) is None


def test_a_session_expires_after_twelve_hours(tmp_path: Path) -> None:
    auth = Auth(settings(tmp_path))
    session, cookie = auth.new_session("ops")
    assert auth.read_cookie(cookie, now=session.issued_at + SESSION_MAX_AGE_S) is not None
    assert auth.read_cookie(cookie, now=session.issued_at + SESSION_MAX_AGE_S + 1) is None


def test_changing_the_password_or_the_secret_logs_everyone_out(tmp_path: Path) -> None:
    _, cookie = Auth(settings(tmp_path)).new_session("ops")
    assert Auth(settings(tmp_path)).read_cookie(cookie) is not None
    assert (
        Auth(settings(tmp_path, dashboard_password=SecretStr("pw-two"))).read_cookie(cookie) is None
    )
    assert (
        Auth(settings(tmp_path, dashboard_secret=SecretStr("x" * 32))).read_cookie(cookie) is None
    )


def test_an_unset_or_empty_password_is_generated_once_into_a_private_file(tmp_path: Path) -> None:
    first = dashboard_password(settings(tmp_path, dashboard_password=None))
    again = dashboard_password(settings(tmp_path, dashboard_password=SecretStr("")))
    assert first == again and len(first) >= 12
    mode = (tmp_path / "dashboard.password").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert Auth(settings(tmp_path, dashboard_password=None)).check_credentials("ops", first)
    assert not Auth(settings(tmp_path, dashboard_password=None)).check_credentials("ops", "")


def test_the_limiter_allows_five_failures_a_minute_per_key_then_waits_out_the_window() -> None:
    limiter = LoginLimiter(allowed=5, window_s=60)
    keys = ["addr:10.0.0.1", "user:ops"]
    for second in range(5):
        assert limiter.retry_after(keys, now=100.0 + second) == 0
        limiter.failed(keys, now=100.0 + second)
    assert limiter.retry_after(keys, now=105.0) == 56
    assert limiter.retry_after(["addr:10.0.0.2"], now=105.0) == 0  # another address is free
    assert limiter.retry_after(["user:ops"], now=105.0) > 0  # but not the same user name
    assert limiter.retry_after(keys, now=160.5) == 0  # the oldest failure left the window
    limiter.succeeded(keys)
    assert limiter.retry_after(keys, now=106.0) == 0


def test_a_spray_of_addresses_never_resets_the_lock_on_the_user_name() -> None:
    limiter = LoginLimiter(allowed=5, window_s=60)
    for second in range(5):
        limiter.failed(["addr:10.0.0.1", "user:admin"], now=100.0 + second)
    assert limiter.retry_after(["user:admin"], now=105.0) > 0
    # Many more addresses than the limiter keeps, each failing once, within the window.
    for n in range(12_000):
        limiter.failed([f"addr:10.1.{n // 256}.{n % 256}"], now=105.0 + n / 1000)
    assert limiter.retry_after(["addr:10.9.9.9", "user:admin"], now=118.0) > 0
    assert len(limiter._failures) <= 10_000  # memory stays bounded


def test_origins_compare_as_browsers_write_them() -> None:
    assert origin_of("https://Ops.Example.com/dashboard?x=1") == "https://ops.example.com"
    assert origin_of("https://ops.example.com:443") == "https://ops.example.com"
    assert origin_of("http://127.0.0.1:8600/") == "http://127.0.0.1:8600"
    assert origin_of("http://[::1]:8600") == "http://[::1]:8600"
    for not_an_origin in ("null", "", "file:///etc/passwd", "http://", "http://h:99999"):
        assert origin_of(not_an_origin) is None


def test_the_public_url_and_trusted_proxies_are_checked_at_the_door(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTOPS_TRUSTED_PROXIES", "10.1.2.3/8, 127.0.0.1,::1")
    monkeypatch.setenv("EVENTOPS_DASHBOARD_PUBLIC_URL", "https://Ops.Example.com/")
    read = read_settings()
    assert read.trusted_proxies == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert Auth(
        settings(tmp_path, dashboard_public_url=read.dashboard_public_url)
    ).public_origin == ("https://ops.example.com")
    monkeypatch.delenv("EVENTOPS_TRUSTED_PROXIES")
    assert read_settings().trusted_proxies == []  # unset: no proxy is believed
    for name, value, message in [
        ("EVENTOPS_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local", "not an address or CIDR"),
        ("EVENTOPS_DASHBOARD_PUBLIC_URL", "ops.example.com", "must be an http:// or https://"),
        ("EVENTOPS_DASHBOARD_PUBLIC_URL", "https://ops.example.com:99999", "must be an http"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError, match=f"{name}: {message}"):
            read_settings()
        monkeypatch.delenv(name)
