"""The delta layer: photos added on the device, searched together with the bundle.

:class:`~device.search.Searcher` merges the bundle's hits with this layer's; the
photos themselves arrive through :mod:`device.ingest`, whose store this layer
reads (only through :meth:`IngestStore.ready` and :meth:`IngestStore.file`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from device.bundle import Item
from device.errors import ItemNotFound

if TYPE_CHECKING:
    from device.ingest import IngestStore


class DeltaLayer:
    """The added photos that are ready, searched exactly and merged with the bundle.

    Readers get a consistent snapshot without locking: :meth:`refresh` swaps in
    new arrays rather than changing them.
    """

    def __init__(self, store: IngestStore, model: str):
        self.store = store
        self.model = model
        self._snapshot: tuple[list[Item], np.ndarray | None, dict] = ([], None, {})
        self.refresh()

    def refresh(self) -> None:
        """Reload the ready photos from the store."""
        items, matrix = self.store.ready(self.model)
        self._snapshot = (items, matrix, {item.id: row for row, item in enumerate(items)})

    @property
    def items(self) -> list[Item]:
        """Ready added photos, oldest first."""
        return self._snapshot[0]

    def __len__(self) -> int:
        return len(self._snapshot[0])

    def item(self, ident: str) -> Item:
        """An added photo by id; raises :class:`ItemNotFound`."""
        items, _, rows = self._snapshot
        if ident not in rows:
            raise ItemNotFound(f"no item with id {ident!r}")
        return items[rows[ident]]

    def embedding(self, ident: str) -> np.ndarray:
        """The stored embedding of an added photo."""
        items, matrix, rows = self._snapshot
        if ident not in rows:
            raise ItemNotFound(f"no item with id {ident!r}")
        return matrix[rows[ident]]

    def file(self, relative: str) -> Path:
        """Path of an added photo's rendition (``relative`` as an :class:`Item` names it).

        Raises:
            ItemNotFound: not a file of the ingest store.
        """
        return self.store.file(relative)

    def scores(self, vector: np.ndarray, admit=None) -> list[tuple[Item, float]]:
        """(item, cosine) for every ready photo that ``admit`` lets through."""
        items, matrix, _ = self._snapshot
        if matrix is None:
            return []
        scores = matrix @ np.asarray(vector, dtype=np.float32)
        return [(item, float(s)) for item, s in zip(items, scores) if admit is None or admit(item)]
