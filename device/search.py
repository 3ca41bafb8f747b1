"""The searcher: a query in, ranked photos with scores out.

Shaped like a MediaPipe task: :class:`SearcherOptions`, then
:meth:`Searcher.from_bundle` (or :meth:`Searcher.create_from_options`), then
:meth:`Searcher.search`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import threading
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from device import query as query_syntax
from device.bundle import Bundle, Item
from device.encoders import EncoderOptions, TextEncoder
from device.errors import ItemNotFound, QueryInvalid
from device.index import top_k
from device.model import Relevance, relevance_of

if TYPE_CHECKING:
    from device.delta import DeltaLayer

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
        strength: ``strong`` when the score reaches the model's calibrated threshold
            (:class:`device.model.Relevance`), else ``weak``; ``None`` when the model
            has no calibration.
    """

    rank: int
    score: float
    item: Item
    strength: str | None = None

    def to_json(self) -> dict:
        """The result as the CLI's ``--json`` and ``/api/search`` give it."""
        item = self.item
        return {
            "rank": self.rank,
            "id": item.id,
            "path": item.path,
            "score": round(float(self.score), 6),
            "strength": self.strength,
            "thumb": item.thumb,
            "width": item.width,
            "height": item.height,
            "taken": item.taken,
        }


@dataclasses.dataclass(frozen=True)
class Filters:
    """Restrictions on which photos a search may return.

    Attributes:
        folder: only photos in this folder or below it (library-relative, POSIX).
        taken_from, taken_to: only photos whose EXIF date falls in this range
            (inclusive, ``YYYY-MM-DD``); photos without a date are left out when
            either bound is set.
        min_score: only results scoring at least this (cosine).
    """

    folder: str | None = None
    taken_from: str | None = None
    taken_to: str | None = None
    min_score: float | None = None

    @classmethod
    def parse(cls, folder=None, taken_from=None, taken_to=None, min_score=None) -> "Filters":
        """Build filters from request parameters (strings or ``None``/empty).

        Raises:
            QueryInvalid: a malformed date, an inverted range, or a score outside -1..1.
        """
        folder = (folder or "").strip().strip("/") or None
        dates = []
        for name, raw in (("from", taken_from), ("to", taken_to)):
            raw = (raw or "").strip()
            if raw:
                try:
                    dates.append(_dt.date.fromisoformat(raw).isoformat())
                except ValueError:
                    raise QueryInvalid(f"date {name} must be YYYY-MM-DD, not {raw!r}") from None
            else:
                dates.append(None)
        if dates[0] and dates[1] and dates[0] > dates[1]:
            raise QueryInvalid("the date range ends before it starts")
        score = None
        if min_score not in (None, ""):
            try:
                score = float(min_score)
            except (TypeError, ValueError):
                raise QueryInvalid("min_score must be a number between -1 and 1") from None
            if not -1.0 <= score <= 1.0:
                raise QueryInvalid("min_score must be a number between -1 and 1")
        return cls(folder=folder, taken_from=dates[0], taken_to=dates[1], min_score=score)

    @property
    def restricts_rows(self) -> bool:
        """Whether the filters exclude photos by metadata (not only by score)."""
        return bool(self.folder or self.taken_from or self.taken_to)

    def admits(self, item: Item) -> bool:
        """Whether ``item`` passes the folder and date filters."""
        if self.folder and not (item.folder == self.folder or item.folder.startswith(self.folder + "/")):
            return False
        if self.taken_from or self.taken_to:
            day = (item.taken or "")[:10]
            if not day or (self.taken_from and day < self.taken_from) or (self.taken_to and day > self.taken_to):
                return False
        return True


NO_FILTERS = Filters()


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

    def __init__(self, bundle: Bundle, encoder: TextEncoder, options: SearcherOptions,
                 delta: DeltaLayer | None = None):
        self.bundle = bundle
        self.encoder = encoder
        self.options = options
        #: Photos added on the device (:class:`device.delta.DeltaLayer`), searched with the bundle.
        self.delta = delta
        # Exact or partitioned, as the bundle was built: one search interface.
        self.index = bundle.index
        self._lock = threading.Lock()
        self._row_cache: dict = {}
        #: What a strong match is for the bundle's model; ``None``: uncalibrated, no strengths.
        self.relevance: Relevance | None = relevance_of(bundle.spec)

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

    def search(self, query: str, k: int = 5, offset: int = 0, filters: Filters = NO_FILTERS) -> list[Result]:
        """The best ``k`` photos for ``query``, skipping the first ``offset``.

        ``query`` may use the query syntax of :mod:`device.query` (``beach -people``,
        ``2:dog + cat``, ``@ID``).

        Raises:
            QueryInvalid: bad query (see :func:`check_query` and :func:`device.query.parse`),
                an ``@ID`` term that names no photo, or bad ``k``/``offset``.
        """
        query = check_query(query, self.options.max_query_chars)
        k, offset = check_page(k, offset)
        vector = self.embed_query(query)
        # Only photos (@ID terms): photo-to-photo scores, judged as find-similar's are.
        kind = "image" if all(t.item_id is not None for t in query_syntax.parse(query)) else "text"
        return self.search_vector(vector, k, offset, filters, kind=kind)

    def embed_query(self, query: str) -> np.ndarray:
        """The query vector: weighted sum of the terms' embeddings, unit length.

        Raises:
            QueryInvalid: the terms cancel out (e.g. ``cat -cat``), bad syntax, or an
                ``@ID`` term names no photo.
        """
        terms = query_syntax.parse(query)
        if len(terms) == 1 and terms[0].text is not None:
            return self.encoder.embed(terms[0].text)  # the common case: one plain term
        total = np.zeros(self.encoder.dim, dtype=np.float32)
        for term in terms:
            if term.item_id is not None:
                try:
                    vector = self.embedding_of(term.item_id)
                except ItemNotFound:  # a bad query, not a missing page: 400 in the API
                    raise QueryInvalid(f"no photo with id {term.item_id!r} in this library "
                                       f"(to search for the text, quote it: \"@{term.item_id}\")") from None
            else:
                vector = self.encoder.embed(term.text)
            total += np.float32(term.weight) * vector
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise QueryInvalid("the query's terms cancel each other out")
        return total / norm

    def similar(self, item_id: str, k: int = 5, offset: int = 0, filters: Filters = NO_FILTERS) -> list[Result]:
        """Photos most like the photo ``item_id`` (by its stored embedding), itself excluded.

        Raises:
            ItemNotFound: no such photo.
            QueryInvalid: bad ``k``/``offset``.
        """
        vector = self.embedding_of(item_id)
        k, offset = check_page(k, offset)
        return self.search_vector(vector, k, offset, filters, exclude=item_id, kind="image")

    def search_vector(self, vector, k: int = 5, offset: int = 0, filters: Filters = NO_FILTERS,
                      exclude: str | None = None, kind: str = "text") -> list[Result]:
        """Like :meth:`search` for an embedding already in the shared space.

        ``kind`` says what made ``vector`` (``text``: a query; ``image``: a photo), so
        which calibrated threshold gives each result its strength.
        """
        vector = np.asarray(vector, dtype=np.float32)
        want = offset + k + (1 if exclude is not None else 0)
        if filters.restricts_rows:
            rows = self._allowed_rows(filters)
            sub = np.asarray(self.bundle.embeddings[rows]) @ vector
            picked, scores = top_k(sub, want)
            picked = rows[picked]
        else:
            picked, scores = self.index.search(vector, want)
        hits = [(self.bundle.items[int(r)], float(s)) for r, s in zip(picked, scores)]
        if self.delta is not None and len(self.delta):
            admit = filters.admits if filters.restricts_rows else None
            extra = [(item, s) for item, s in self.delta.scores(vector, admit) if item.id not in self.bundle]
            # Merge by score; on a tie the bundle's photo comes first (sort is stable).
            hits = sorted(hits + extra, key=lambda hit: -hit[1])[:want]
        hits = [(item, s) for item, s in hits if item.id != exclude]
        if filters.min_score is not None:
            hits = [(item, s) for item, s in hits if s >= filters.min_score]
        hits = hits[offset:offset + k]
        judge = self.relevance.strength if self.relevance is not None else (lambda score, kind: None)
        return [Result(rank=offset + i + 1, score=s, item=item, strength=judge(s, kind))
                for i, (item, s) in enumerate(hits)]

    def item(self, item_id: str) -> Item:
        """A photo of the bundle or added on the device; raises :class:`ItemNotFound`."""
        try:
            return self.bundle.item(item_id)
        except ItemNotFound:
            if self.delta is None:
                raise
            return self.delta.item(item_id)

    def embedding_of(self, item_id: str) -> np.ndarray:
        """The stored embedding of a photo; raises :class:`ItemNotFound`."""
        if item_id in self.bundle:
            return np.asarray(self.bundle.embeddings[self.bundle.row(item_id)], dtype=np.float32)
        if self.delta is not None:
            return self.delta.embedding(item_id)
        raise ItemNotFound(f"no item with id {item_id!r}")

    def file(self, relative: str):
        """Path of a bundle file or of an added photo's rendition; raises :class:`ItemNotFound`."""
        try:
            return self.bundle.file(relative)
        except ItemNotFound:
            if self.delta is None:
                raise
            return self.delta.file(relative)

    def all_items(self) -> list[Item]:
        """The bundle's photos, then those added on the device (for browsing)."""
        extra = [i for i in self.delta.items if i.id not in self.bundle] if self.delta is not None else []
        return self.bundle.items + extra if extra else self.bundle.items

    def folders(self) -> list[str]:
        """Every folder that holds photos, and their parents, sorted (for the filter menu)."""
        found = set()
        for item in self.all_items():
            parts = item.folder.split("/") if item.folder else []
            for depth in range(1, len(parts) + 1):
                found.add("/".join(parts[:depth]))
        return sorted(found)

    def _allowed_rows(self, filters: Filters) -> np.ndarray:
        key = (filters.folder, filters.taken_from, filters.taken_to)
        with self._lock:
            rows = self._row_cache.get(key)
        if rows is None:
            rows = np.asarray([i for i, item in enumerate(self.bundle.items) if filters.admits(item)], dtype=np.int64)
            with self._lock:
                if len(self._row_cache) >= 32:  # bounded: filters come from users
                    self._row_cache.pop(next(iter(self._row_cache)))
                self._row_cache[key] = rows
        return rows

    def close(self) -> None:
        """Release the text tower."""
        self.encoder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def check_page(k, offset, max_k: int = MAX_K) -> tuple[int, int]:
    """``k`` and ``offset`` as whole numbers in range (1..``max_k``, 0..100000).

    Raises:
        QueryInvalid: saying which is wrong.
    """
    try:
        k, offset = int(k), int(offset)
    except (TypeError, ValueError):
        raise QueryInvalid("k and offset must be whole numbers") from None
    if not 1 <= k <= max_k:
        raise QueryInvalid(f"k must be between 1 and {max_k}")
    if not 0 <= offset <= 100_000:
        raise QueryInvalid("offset must be between 0 and 100000")
    return k, offset
