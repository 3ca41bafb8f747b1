"""A LevelDB table (SSTable) writer: one sorted, immutable key-value file.

The TFLite Task Library opens a ScaNN on-device index as a single LevelDB
table (``leveldb::Table::Open`` over the bytes, no database around it), so the
index is written as exactly that: the format of LevelDB's ``doc/table_format.md``
with its default options (4 KiB data blocks, a restart point every 16 keys,
no compression, no filter block). Python bindings of LevelDB (plyvel and the
like) write whole databases, whose tables hold internal keys (the user key
plus a sequence number); the Task Library looks keys up as they are, so none
of them fits, hence this writer. It lays the bytes out as LevelDB's own
``TableBuilder`` does, including its shortened index keys, and the
conformance test checks it byte for byte against tflite-support's builder.
"""

from __future__ import annotations

import struct

#: LevelDB's defaults (``leveldb::Options``).
BLOCK_SIZE = 4096
RESTART_INTERVAL = 16

_NO_COMPRESSION = b"\x00"
_MAGIC = 0xDB4775248B80FB57
# A block handle is two varint64s: at most 10 bytes each.
_HANDLE_SPACE = 2 * 10
_CRC_MASK_DELTA = 0xA282EAD8


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def masked_crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` masked as LevelDB stores checksums (``crc32c::Mask``).

    The mask keeps a CRC of bytes that themselves contain CRCs from being a
    fixed point; readers unmask before comparing.
    """
    import google_crc32c  # the host extra's; imported here so the CLI loads without it

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit (``BytewiseComparator``'s rule)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)):
        byte = start[common]
        if byte < 0xFF and byte + 1 < limit[common]:
            return start[:common] + bytes([byte + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key k >= ``key`` (``BytewiseComparator``'s rule)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class _Block:
    """Prefix-compressed entries with restart points, as ``leveldb::BlockBuilder``."""

    def __init__(self, restart_interval: int):
        self.restart_interval = restart_interval
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            while (shared < min(len(key), len(self.last_key))
                   and key[shared] == self.last_key[shared]):
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        self.buffer += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        self.buffer += key[shared:] + value
        self.last_key = key
        self.counter += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    @property
    def empty(self) -> bool:
        return not self.buffer

    def finish(self) -> bytes:
        return bytes(self.buffer) + struct.pack(f"<{len(self.restarts)}I", *self.restarts) \
            + struct.pack("<I", len(self.restarts))


def write_table(entries: dict[bytes, bytes]) -> bytes:
    """The bytes of a LevelDB table holding ``entries``.

    Args:
        entries: key to value; written in bytewise key order (LevelDB's default
            comparator), whatever order the dict has.

    Raises:
        TypeError: a key or value is not bytes.
    """
    out = bytearray()

    def write_block(block: _Block) -> bytes:
        contents = block.finish()
        handle = _varint(len(out)) + _varint(len(contents))
        out.extend(contents)
        out.extend(_NO_COMPRESSION + struct.pack("<I", masked_crc32c(contents + _NO_COMPRESSION)))
        return handle

    for key, value in entries.items():
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError("LevelDB keys and values are bytes")
    data = _Block(RESTART_INTERVAL)
    index = _Block(1)
    pending = None  # handle of the last data block written, not yet in the index
    last_key = b""
    for key in sorted(entries):
        if pending is not None:
            index.add(_shortest_separator(last_key, key), pending)
            pending = None
        last_key = key
        data.add(key, entries[key])
        if data.size_estimate() >= BLOCK_SIZE:
            pending = write_block(data)
            data = _Block(RESTART_INTERVAL)
    if not data.empty:
        pending = write_block(data)
    metaindex_handle = write_block(_Block(RESTART_INTERVAL))  # no filter: an empty meta-index
    if pending is not None:
        index.add(_short_successor(last_key), pending)
    index_handle = write_block(index)
    footer = (metaindex_handle + index_handle).ljust(2 * _HANDLE_SPACE, b"\x00")
    out.extend(footer + struct.pack("<II", _MAGIC & 0xFFFFFFFF, _MAGIC >> 32))
    return bytes(out)
