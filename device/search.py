"""The searcher: a query in, ranked photos with scores out.

Shaped like a MediaPipe task: :class:`SearcherOptions`, then
:meth:`Searcher.from_bundle` (or :meth:`Searcher.create_from_options`), then
:meth:`Searcher.search`.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from pathlib import Path

from device.bundle import Bundle, Item
from device.encoders import EncoderOptions, TextEncoder
from device.errors import QueryInvalid

#: Longest query accepted, in characters. The text tower reads 64 tokens; a
#: longer query is almost surely pasted by mistake (or an attack).
MAX_QUERY_CHARS = 500
#: Most results one search returns.
MAX_K = 1000


@dataclasses.dataclass
class SearcherOptions:
    """Options for :class:`Searcher`.

    Attributes:
        bundle_dir: the bundle to search.
        verify: bundle verification level, ``full`` or ``quick``.
        num_threads: text-tower interpreter threads.
        max_query_chars: longer queries are refused.
    """

    bundle_dir: Path
    verify: str = "full"
    num_threads: int = 1
    max_query_chars: int = MAX_QUERY_CHARS


@dataclasses.dataclass(frozen=True)
class Result:
    """One search hit.

    Attributes:
        rank: 1-based position, best first.
        score: cosine similarity of query and photo (-1..1; higher is closer).
        item: the photo.
    """

    rank: int
    score: float
    item: Item

    def to_json(self) -> dict:
        """The result as the CLI's ``--json`` and ``/api/search`` give it."""
        item = self.item
        return {
            "rank": self.rank,
            "id": item.id,
            "path": item.path,
            "score": round(float(self.score), 6),
            "thumb": item.thumb,
            "width": item.width,
            "height": item.height,
            "taken": item.taken,
        }


def check_query(query, max_chars: int = MAX_QUERY_CHARS) -> str:
    """Return ``query`` stripped, or raise :class:`QueryInvalid` saying why.

    Refused: anything not a string, empty or blank, longer than ``max_chars``,
    containing control characters, or without a single letter or digit.
    """
    if not isinstance(query, str):
        raise QueryInvalid("the query must be text")
    query = query.strip()
    if not query:
        raise QueryInvalid("the query is empty: type what you are looking for")
    if len(query) > max_chars:
        raise QueryInvalid(f"the query is {len(query)} characters long; the limit is {max_chars}")
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in query):
        raise QueryInvalid("the query contains control characters; it must be plain text")
    if not any(c.isalnum() for c in query):
        raise QueryInvalid("the query has no letters or digits")
    return query


class Searcher:
    """Text-to-image search over one bundle.

    Thread-safe: the web server calls :meth:`search` from several threads.
    """

    def __init__(self, bundle: Bundle, encoder: TextEncoder, options: SearcherOptions):
        self.bundle = bundle
        self.encoder = encoder
        self.options = options
        # Exact or partitioned, as the bundle was built: one search interface.
        self.index = bundle.index

    @classmethod
    def create_from_options(cls, options: SearcherOptions) -> "Searcher":
        """Open and verify the bundle, then load its text tower.

        Raises:
            BundleInvalid: the bundle fails verification.
            ModelInvalid: its text tower cannot be loaded.
        """
        bundle = Bundle.open(options.bundle_dir, verify=options.verify)
        encoder = TextEncoder.create_from_options(
            EncoderOptions(model_dir=bundle.model_dir, num_threads=options.num_threads, verify=False)
        )
        return cls(bundle, encoder, options)

    @classmethod
    def from_bundle(cls, bundle_dir: Path, **kwargs) -> "Searcher":
        """Shortcut: ``create_from_options(SearcherOptions(bundle_dir, **kwargs))``."""
        return cls.create_from_options(SearcherOptions(bundle_dir=Path(bundle_dir), **kwargs))

    def search(self, query: str, k: int = 5, offset: int = 0) -> list[Result]:
        """The best ``k`` photos for ``query``, skipping the first ``offset``.

        Raises:
            QueryInvalid: bad query (see :func:`check_query`) or bad ``k``/``offset``.
        """
        query = check_query(query, self.options.max_query_chars)
        k, offset = _check_page(k, offset)
        return self.search_vector(self.encoder.embed(query), k, offset)

    def search_vector(self, vector, k: int = 5, offset: int = 0) -> list[Result]:
        """Like :meth:`search` for an embedding already in the shared space."""
        rows, scores = self.index.search(vector, offset + k)
        return [Result(rank=offset + i + 1, score=float(s), item=self.bundle.items[int(r)])
                for i, (r, s) in enumerate(zip(rows[offset:], scores[offset:]))]

    def close(self) -> None:
        """Release the text tower."""
        self.encoder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _check_page(k, offset) -> tuple[int, int]:
    try:
        k, offset = int(k), int(offset)
    except (TypeError, ValueError):
        raise QueryInvalid("k and offset must be whole numbers") from None
    if not 1 <= k <= MAX_K:
        raise QueryInvalid(f"k must be between 1 and {MAX_K}")
    if not 0 <= offset <= 100_000:
        raise QueryInvalid("offset must be between 0 and 100000")
    return k, offset
