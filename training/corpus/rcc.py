"""Read files out of Qt binary resource files (``.rcc``), as shipped by gcompris-qt-data.

Layout (Qt ``rcc`` format versions 1-3, all integers big-endian)::

    header:  b"qres", u32 version, u32 tree_offset, u32 data_offset, u32 names_offset
             [u32 overall_flags when version >= 3]
    tree:    fixed-size nodes (14 bytes, 22 with the u64 mtime of version >= 2);
             node 0 is the root directory.
             u32 name_offset, u16 flags,
               directory: u32 child_count, u32 first_child_index
               file:      u16 territory, u16 language, u32 data_offset
    names:   u16 length (UTF-16 units), u32 hash, UTF-16BE name
    data:    u32 size, payload; flag 0x1 = zlib payload behind a u32 big-endian
             uncompressed size (``qCompress``), flag 0x4 = a zstd frame.

zstd payloads are decoded only when the optional ``zstandard`` module is importable;
otherwise they are skipped and counted (:attr:`RccArchive.skipped`).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RccArchive", "RccError", "RccFile", "read_rcc"]

log = logging.getLogger(__name__)

MAGIC = b"qres"
FLAG_COMPRESSED = 0x1
FLAG_DIRECTORY = 0x2
FLAG_COMPRESSED_ZSTD = 0x4
_NODE_SIZE_V1 = 14
_NODE_SIZE_V2 = 22
_SUPPORTED_VERSIONS = (1, 2, 3)


class RccError(ValueError):
    """The bytes are not a Qt resource file this reader understands."""


@dataclass(frozen=True)
class RccFile:
    """One file inside an ``.rcc``: its path (``/``-separated, no leading slash) and bytes."""

    path: str
    data: bytes


@dataclass
class RccArchive:
    """Decoded files of one ``.rcc`` and the paths that could not be decoded, with the reason."""

    files: list[RccFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _u16(buf: bytes, off: int) -> int:
    return int(struct.unpack_from(">H", buf, off)[0])


def _u32(buf: bytes, off: int) -> int:
    return int(struct.unpack_from(">I", buf, off)[0])


def _name(buf: bytes, names_offset: int, name_offset: int) -> str:
    off = names_offset + name_offset
    length = _u16(buf, off)
    start = off + 2 + 4  # length, hash
    return buf[start : start + 2 * length].decode("utf-16-be")


def _payload(buf: bytes, data_offset: int, file_offset: int, flags: int) -> bytes:
    off = data_offset + file_offset
    size = _u32(buf, off)
    raw = buf[off + 4 : off + 4 + size]
    if len(raw) != size:
        raise RccError(f"payload at {off} claims {size} bytes, file has {len(raw)}")
    if flags & FLAG_COMPRESSED:
        expected = _u32(raw, 0)
        out = zlib.decompress(raw[4:])
        if len(out) != expected:
            raise RccError(f"zlib payload gave {len(out)} bytes, header says {expected}")
        return out
    if flags & FLAG_COMPRESSED_ZSTD:
        try:
            import zstandard
        except ImportError as e:
            raise RccError("zstd-compressed entry; `pip install zstandard` to read it") from e
        return bytes(zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 30))
    return raw


def _walk(
    buf: bytes, tree: int, node_size: int, names: int, data: int, archive: RccArchive
) -> Iterator[RccFile]:
    stack: list[tuple[int, str]] = [(0, "")]
    visited: set[int] = set()
    while stack:
        index, prefix = stack.pop()
        if index in visited:
            raise RccError(f"tree node {index} visited twice: corrupt tree")
        visited.add(index)
        off = tree + index * node_size
        if off + node_size > len(buf):
            raise RccError(f"tree node {index} at byte {off} lies past the end ({len(buf)} bytes)")
        flags = _u16(buf, off + 4)
        name = "" if index == 0 else _name(buf, names, _u32(buf, off))
        path = f"{prefix}/{name}" if prefix else name
        if flags & FLAG_DIRECTORY:
            count, first = _u32(buf, off + 6), _u32(buf, off + 10)
            # push in reverse so that children come out in stored (sorted-by-hash) order
            stack.extend((first + k, path) for k in reversed(range(count)))
            continue
        try:
            yield RccFile(path, _payload(buf, data, _u32(buf, off + 10), flags))
        except (RccError, zlib.error, struct.error) as e:
            archive.skipped.append((path, str(e)))


def read_rcc(source: Path | bytes) -> RccArchive:
    """Parse an ``.rcc`` file (path or bytes) and return all files it holds.

    Raises :class:`RccError` when the header is not ``qres`` with a known version.
    Entries that cannot be decoded are listed in ``skipped`` rather than raised.
    """
    buf = source.read_bytes() if isinstance(source, Path) else bytes(source)
    if len(buf) < 20 or buf[:4] != MAGIC:
        raise RccError(f"not a Qt resource file: starts with {buf[:4]!r}, expected {MAGIC!r}")
    version, tree, data, names = struct.unpack_from(">IIII", buf, 4)
    if version not in _SUPPORTED_VERSIONS:
        raise RccError(f"rcc version {version}; this reader knows {_SUPPORTED_VERSIONS}")
    node_size = _NODE_SIZE_V1 if version == 1 else _NODE_SIZE_V2
    archive = RccArchive()
    archive.files = sorted(_walk(buf, tree, node_size, names, data, archive), key=lambda f: f.path)
    if archive.skipped:
        log.warning("%d entries skipped in rcc: %s", len(archive.skipped), archive.skipped[:3])
    return archive
