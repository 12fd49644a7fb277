"""Streaming AES-256-GCM encryption at rest: round trips and every kind of damage."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from core.backups import crypto
from core.backups.crypto import CorruptBackup, decrypt_stream, encrypt_file, is_encrypted

KEY = "correct horse battery staple"


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    # Small chunks make multi-chunk files (and cuts on chunk boundaries) cheap to test.
    monkeypatch.setattr(crypto, "CHUNK_SIZE", 1024)
    return 1024


def _encrypted(tmp_path: Path, data: bytes) -> Path:
    src, dst = tmp_path / "plain", tmp_path / "plain.enc"
    src.write_bytes(data)
    encrypt_file(src, dst, KEY)
    return dst


def _decrypt(path: Path, passphrase: str = KEY) -> bytes:
    out = io.BytesIO()
    decrypt_stream(path, out, passphrase)
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 4096, 10_000])
def test_round_trip_of_any_size(tmp_path: Path, small_chunks: int, size: int) -> None:
    data = os.urandom(size)
    enc = _encrypted(tmp_path, data)
    assert is_encrypted(enc) and not is_encrypted(tmp_path / "plain")
    if size >= 64:  # a short random string may occur in ciphertext by chance
        assert data[:64] not in enc.read_bytes()
    assert _decrypt(enc) == data
    assert enc.stat().st_mode & 0o077 == 0


def test_round_trip_with_default_chunk_size(tmp_path: Path) -> None:
    data = os.urandom(3 * crypto.CHUNK_SIZE + 17)
    assert _decrypt(_encrypted(tmp_path, data)) == data


def test_same_input_encrypts_differently_each_time(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    src.write_bytes(b"x" * 100)
    encrypt_file(src, tmp_path / "a", KEY)
    encrypt_file(src, tmp_path / "b", KEY)
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()


@pytest.mark.parametrize("where", ["header", "first-chunk", "middle", "last-byte"])
def test_flipped_byte_is_corrupt(tmp_path: Path, small_chunks: int, where: str) -> None:
    enc = _encrypted(tmp_path, os.urandom(5000))
    blob = bytearray(enc.read_bytes())
    index = {
        "header": 12,
        "first-chunk": crypto.HEADER_SIZE + 3,
        "middle": len(blob) // 2,
        "last-byte": len(blob) - 1,
    }[where]
    blob[index] ^= 0x01
    enc.write_bytes(bytes(blob))
    with pytest.raises(CorruptBackup):
        _decrypt(enc)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_file_is_corrupt(tmp_path: Path, small_chunks: int, keep: float) -> None:
    enc = _encrypted(tmp_path, os.urandom(5000))
    blob = enc.read_bytes()
    enc.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(CorruptBackup):
        _decrypt(enc)


def test_truncated_on_a_chunk_boundary_is_corrupt(tmp_path: Path, small_chunks: int) -> None:
    enc = _encrypted(tmp_path, os.urandom(3 * small_chunks + 10))
    sealed = small_chunks + crypto.TAG_SIZE
    blob = enc.read_bytes()
    enc.write_bytes(blob[: crypto.HEADER_SIZE + 2 * sealed])
    with pytest.raises(CorruptBackup, match="authentication failed"):
        _decrypt(enc)


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(1040)])
def test_appended_bytes_are_corrupt(tmp_path: Path, small_chunks: int, extra: bytes) -> None:
    enc = _encrypted(tmp_path, os.urandom(2 * small_chunks))
    with enc.open("ab") as f:
        f.write(extra)
    with pytest.raises(CorruptBackup):
        _decrypt(enc)


def test_wrong_passphrase_is_corrupt(tmp_path: Path) -> None:
    enc = _encrypted(tmp_path, b"secret rows")
    with pytest.raises(CorruptBackup, match="wrong passphrase"):
        _decrypt(enc, "not the key")


def test_plain_file_is_not_an_encrypted_backup(tmp_path: Path) -> None:
    plain = tmp_path / "plain.dump"
    plain.write_bytes(b"PGDMP" + os.urandom(100))
    assert not is_encrypted(plain)
    assert not is_encrypted(tmp_path / "missing")
    with pytest.raises(CorruptBackup, match="not an eventops encrypted file"):
        _decrypt(plain)
