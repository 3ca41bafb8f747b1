"""Which text route a query takes: English to the primary text tower, any other language to the multilingual one.

A model with a multilingual route (``model.json`` format 2, ``text.multilingual``)
names its router. Both routers work offline on short queries and are chosen by
retrieval on the evaluation set's tuning half (bench/RESULTS.md, "Routing by language"):

* ``heuristic``: English when every letter is ASCII and every word is a whole
  word of the primary tokenizer's (MiniLM's WordPiece) vocabulary (or an inflection or a
  two-word compound of such words) and not one of
  a few dozen function words of other Latin-script languages. Costs microseconds
  and no memory beyond the vocabulary the primary tokenizer holds already.
* ``py3langid``: langid.py's naive Bayes model (PyPI ``py3langid``, model inside
  the package), English when it names ``en``.

Routers load lazily (the first query), so the daemon starts as fast as before.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Protocol

from device.errors import ModelInvalid

ROUTERS = ("heuristic", "py3langid")

_WORD = re.compile(r"[a-z]+")
#: Short function words of es, de, fr, pt, it (articles, prepositions, conjunctions) that
#: BERT's uncased English vocabulary also holds as whole words, so vocabulary coverage
#: alone would call "un gato" English. Words that are English too (die, am, no, con) are left out.
#: ("um" is kept: a hesitation is not a photo search.)
FOREIGN_FUNCTION_WORDS = frozenset("""
un una uno unos unas el los las del y sobre bajo entre muy
ein eine einer einen einem eines der das den dem und ohne auf im vom zum zur ist von bei unter
une le les du des et avec sans sur sous dans est aux
um uma uns umas os da das dos na nas nos sem sob
il gli della delle dello nel nella sul sulla di che de
""".split())


#: English inflections stripped before looking a word up (plural, past, gerund, comparative).
_SUFFIXES = ("s", "es", "ed", "d", "ing", "er", "ers")


class LanguageRouter(Protocol):
    """Decides whether a query goes to the primary (English) text tower."""

    name: str

    def is_english(self, text: str) -> bool:
        """True when ``text`` should take the primary (English) route."""


class VocabularyRouter:
    """English when the query is ASCII and its words are whole words of an English vocabulary.

    Args:
        vocabulary: a callable returning the English tokenizer's pieces (called once, on first use).
    """

    name = "heuristic"

    def __init__(self, vocabulary: Callable[[], Iterable[str]]):
        self._source = vocabulary
        self._words: frozenset[str] | None = None

    def is_english(self, text: str) -> bool:
        """See the class docstring; a query without letters (digits, emoji) is English."""
        if any(c.isalpha() and not c.isascii() for c in text):
            return False  # accented Latin, Cyrillic, CJK, ...: not the English tower's text
        if self._words is None:
            self._words = frozenset(w for w in self._source() if w.isascii() and w.isalpha())
        words = _WORD.findall(text.lower())
        return all(w not in FOREIGN_FUNCTION_WORDS and self._known(w) for w in words)

    def _known(self, word: str) -> bool:
        """A whole vocabulary word, an inflection of one, or a compound of two (BERT's
        30k-piece vocabulary lacks many plurals and compounds: planks, ladybird, motorbike)."""
        vocab = self._words
        if word in vocab:
            return True
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3 and word[:-len(suffix)] in vocab:
                return True
        return any(word[:i] in vocab and (word[i:] in vocab or self._known_inflection(word[i:]))
                   for i in range(3, len(word) - 2))

    def _known_inflection(self, word: str) -> bool:
        return any(word.endswith(s) and word[:-len(s)] in self._words for s in _SUFFIXES)


class LangidRouter:
    """English when py3langid's model says ``en`` (its model ships inside the package)."""

    name = "py3langid"

    def __init__(self):
        self._identifier = None

    def is_english(self, text: str) -> bool:
        """See the class docstring."""
        if self._identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
        return self._identifier.classify(text)[0] == "en"


def create_router(name: str, vocabulary: Callable[[], Iterable[str]]) -> LanguageRouter:
    """The router ``name`` (one of :data:`ROUTERS`).

    Args:
        name: the ``router`` of ``model.json``'s ``text.multilingual``.
        vocabulary: the primary tokenizer's pieces, for ``heuristic``.

    Raises:
        ModelInvalid: an unknown router, or ``py3langid`` is not installed.
    """
    if name == "heuristic":
        return VocabularyRouter(vocabulary)
    if name == "py3langid":
        try:
            import py3langid  # noqa: F401  (checked here so a missing package is a model error, not a 500)
        except ImportError:
            raise ModelInvalid("the model's router is py3langid, which is not installed "
                               "(pip install py3langid)") from None
        return LangidRouter()
    raise ModelInvalid(f"unknown language router {name!r} (known: {', '.join(ROUTERS)})")
