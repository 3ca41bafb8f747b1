"""CLIP's BPE tokenizer as a ``tokenizer.json`` the device's ``tokenizers`` library runs,
giving the same token ids as open_clip's ``SimpleTokenizer``."""

from __future__ import annotations


def clip_bpe(simple_tokenizer) -> tuple[dict, list]:
    """CLIP's BPE vocabulary (token -> id) and merges (pairs, by rank) from open_clip's
    ``SimpleTokenizer``: the tables every CLIP checkpoint's tokenizer is made of."""
    merges = sorted(simple_tokenizer.bpe_ranks, key=simple_tokenizer.bpe_ranks.get)
    return dict(simple_tokenizer.encoder), merges


def clip_bpe_tokenizer(simple_tokenizer, max_tokens: int) -> str:
    """A ``tokenizer.json`` reproducing open_clip's ``SimpleTokenizer`` (CLIP's BPE).

    The same vocabulary and merges, the same pre-tokenising regex, byte-level
    symbols, ``</w>`` word ends; lower-casing and whitespace folding as its
    ``clean='lower'``; start- and end-of-text around every text; truncation that
    keeps the end-of-text token; padding with id 0, as open_clip pads.

    open_clip first cleans text with ftfy and HTML unescaping; the parts of that a
    query can meet are reproduced (:func:`_ftfy_like_normalizers`). Not reproduced:
    ftfy's repair of mis-decoded text (mojibake, "cafÃ©"), halfwidth katakana, and
    HTML entities other than the five common ones: such texts may tokenize differently.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = clip_bpe(simple_tokenizer)
    sot = simple_tokenizer.decoder[simple_tokenizer.sot_token_id]
    eot = simple_tokenizer.decoder[simple_tokenizer.eot_token_id]
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", continuing_subword_prefix="",
                              fuse_unk=False))
    tokenizer.normalizer = normalizers.Sequence([
        *_ftfy_like_normalizers(),
        normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Lowercase(),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        # SimpleTokenizer's pattern: each match is a word, the rest (whitespace) is dropped.
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([sot, eot])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}", special_tokens=[(sot, vocab[sot]), (eot, vocab[eot])])
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(length=max_tokens, pad_id=0, pad_token=simple_tokenizer.decoder[0])
    return tokenizer.to_str()


def _ftfy_like_normalizers() -> list:
    """``tokenizers`` normalizers doing what ftfy.fix_text (default settings) and
    open_clip's double ``html.unescape`` do to text a person types: NFC, curly
    quotes straightened, Latin ligatures split, fullwidth ASCII made ASCII, control
    characters removed, and the common HTML entities unescaped (``&amp;`` first, so
    ``&amp;lt;`` becomes ``<`` as after two unescapes)."""
    from tokenizers import Regex, normalizers

    replace = normalizers.Replace
    ligatures = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                 "\ufb05": "st", "\ufb06": "st", "\u0132": "IJ", "\u0133": "ij", "\u01c7": "LJ", "\u01c8": "Lj",
                 "\u01c9": "lj", "\u01ca": "NJ", "\u01cb": "Nj", "\u01cc": "nj"}
    entities = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&nbsp;": "\u00a0"}
    return [
        normalizers.NFC(),
        replace(Regex("[\u2018\u2019\u201a\u201b]"), "'"),
        replace(Regex("[\u201c\u201d\u201e\u201f]"), '"'),
        *(replace(char, plain) for char, plain in ligatures.items()),
        *(replace(chr(code), chr(code - 0xFEE0)) for code in range(0xFF01, 0xFF5F)),  # fullwidth ASCII
        replace("\u3000", " "),
        replace(Regex("[\x00-\x08\x0b\x0e-\x1f\x7f]"), ""),
        replace("&amp;", "&"),
        *(replace(entity, char) for entity, char in entities.items()),
    ]
