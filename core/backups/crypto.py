"""Encryption at rest for backup files of any size: AES-256-GCM in chunks, streamed.

File layout (all integers big-endian):

    header  = magic "EVOPSENC" | version u8 (1) | chunk_size u32 | scrypt log2(n) u8 |
              scrypt r u8 | scrypt p u8 | salt 16 B | nonce prefix 8 B | key check 16 B
    chunk_i = AES-256-GCM(key, nonce = prefix | i as u32, plaintext_i,
                          associated data = header without key check | last flag u8)

Every chunk but the last holds exactly `chunk_size` plaintext bytes; the last holds 0 to
`chunk_size` and is the only one sealed with last flag 1. So a flipped bit fails its
chunk's tag, reordered chunks fail (the counter is in the nonce), a file cut at any point
fails (the new last chunk was sealed as "not last" or is short), and bytes appended after
the real last chunk fail (it was sealed as "last" but is no longer read as last). The
header is authenticated by every chunk. The key check (a GCM tag over nothing, under a
counter no chunk uses) tells a wrong passphrase apart from damaged data.

The key comes from the passphrase through scrypt (n=2^15, r=8, p=1: about 32 MiB and
0.1 s once per file), with a random salt per file, so equal passphrases never give equal
keys and a nonce is never reused under one key.
"""

from __future__ import annotations

import os
import secrets
import struct
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"EVOPSENC"
VERSION = 1
CHUNK_SIZE = 1 << 20
TAG_SIZE = 16
SALT_SIZE = 16
PREFIX_SIZE = 8
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 15, 8, 1
# Upper bounds accepted from a header, so a hostile file cannot ask for gigabytes of RAM.
_MAX_LOG2_N, _MAX_CHUNK = 20, 64 << 20
_KEY_CHECK_COUNTER = 0xFFFFFFFF  # never a chunk's counter
_FIXED = struct.Struct(">8sBIBBB")
HEADER_SIZE = _FIXED.size + SALT_SIZE + PREFIX_SIZE + TAG_SIZE


class CorruptBackup(Exception):
    """The file is not an intact encrypted backup: damaged, cut, extended, or the key is
    wrong. Any plaintext already written to the output must be discarded."""


class WrongPassphrase(CorruptBackup):
    """The passphrase does not open this file (or its header is damaged)."""


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except FileNotFoundError:
        return False


def _derive(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    if not passphrase:
        raise ValueError("empty passphrase")
    kdf = Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p)
    return kdf.derive(passphrase.encode())


def _nonce(prefix: bytes, counter: int) -> bytes:
    return prefix + struct.pack(">I", counter)


def _read_full(f: BinaryIO, size: int) -> bytes:
    """Read `size` bytes or up to end of file (a raw read may return less than asked)."""
    parts = []
    while size > 0:
        part = f.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def encrypt_file(src: Path, dst: Path, passphrase: str) -> None:
    """Encrypt `src` into `dst` (created with mode 0600, fsynced), one chunk in memory."""
    salt, prefix = secrets.token_bytes(SALT_SIZE), secrets.token_bytes(PREFIX_SIZE)
    fixed = _FIXED.pack(MAGIC, VERSION, CHUNK_SIZE, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    aad = fixed + salt + prefix
    aead = AESGCM(_derive(passphrase, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P))
    check = aead.encrypt(_nonce(prefix, _KEY_CHECK_COUNTER), b"", aad)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        fout.write(aad + check)
        counter = 0
        chunk = _read_full(fin, CHUNK_SIZE)
        while True:
            # Look one chunk ahead: only then do we know whether this one is the last.
            following = _read_full(fin, CHUNK_SIZE) if len(chunk) == CHUNK_SIZE else b""
            last = not following
            if counter >= _KEY_CHECK_COUNTER:
                raise ValueError("file too large for this format (2^32 chunks)")
            fout.write(aead.encrypt(_nonce(prefix, counter), chunk, aad + bytes([last])))
            if last:
                break
            chunk, counter = following, counter + 1
        fout.flush()
        os.fsync(fout.fileno())


def decrypt_stream(src: Path, out: BinaryIO, passphrase: str) -> None:
    """Decrypt `src` into `out` chunk by chunk. Raises CorruptBackup (after having written
    the chunks that were intact) on any damage, truncation, extension or a wrong key."""
    with open(src, "rb") as fin:
        header = _read_full(fin, HEADER_SIZE)
        if len(header) < HEADER_SIZE or header[: len(MAGIC)] != MAGIC:
            raise CorruptBackup(f"{src.name}: not an eventops encrypted file (bad header)")
        _, version, chunk_size, log2_n, r, p = _FIXED.unpack_from(header)
        if version != VERSION:
            raise CorruptBackup(f"{src.name}: unsupported encryption format version {version}")
        if not (0 < chunk_size <= _MAX_CHUNK and 1 <= log2_n <= _MAX_LOG2_N and r and p):
            raise CorruptBackup(f"{src.name}: implausible header parameters")
        aad = header[:-TAG_SIZE]
        salt = aad[_FIXED.size : _FIXED.size + SALT_SIZE]
        prefix = aad[_FIXED.size + SALT_SIZE :]
        aead = AESGCM(_derive(passphrase, salt, log2_n, r, p))
        try:
            aead.decrypt(_nonce(prefix, _KEY_CHECK_COUNTER), header[-TAG_SIZE:], aad)
        except InvalidTag:
            raise WrongPassphrase(f"{src.name}: wrong passphrase (or a damaged header)") from None
        sealed = chunk_size + TAG_SIZE
        counter = 0
        block = _read_full(fin, sealed)
        while True:
            following = _read_full(fin, sealed) if len(block) == sealed else b""
            last = not following
            if counter >= _KEY_CHECK_COUNTER:
                raise CorruptBackup(f"{src.name}: too many chunks")
            try:
                plain = aead.decrypt(_nonce(prefix, counter), block, aad + bytes([last]))
            except InvalidTag:
                where = "end of file" if last else f"chunk {counter}"
                raise CorruptBackup(
                    f"{src.name}: authentication failed at {where} "
                    "(damaged, truncated or extended file)"
                ) from None
            out.write(plain)
            if last:
                return
            block, counter = following, counter + 1


def decrypt_to_file(src: Path, directory: Path, passphrase: str) -> Path:
    """Decrypt into a new private (0600) file in `directory`, for programs that need a seekable
    archive (parallel pg_restore). The caller deletes it; on failure nothing is left behind."""
    plain = directory / f".restore-{secrets.token_hex(6)}.dump"
    fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            decrypt_stream(src, out, passphrase)
    except BaseException:
        plain.unlink(missing_ok=True)
        raise
    return plain
