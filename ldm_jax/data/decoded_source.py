"""A random-access view of a tfds split that hands text fields back as `str` and integer
fields as `int` (array_record stores them as bytes and numpy scalars)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DecodedSource(Sequence):
    """Examples of `source` with `text_keys` decoded from UTF-8 and `int_keys` made `int`.

    Subclasses name their keys; a key an example lacks is left out.
    """

    text_keys: tuple[str, ...] = ()
    int_keys: tuple[str, ...] = ()

    def __init__(self, source: Any):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def _clean(self, example: dict[str, Any]) -> dict[str, Any]:
        out = dict(example)
        for key in self.text_keys:
            if isinstance(out.get(key), bytes):
                out[key] = out[key].decode("utf-8")
        for key in self.int_keys:
            if key in out:
                out[key] = int(out[key])
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._clean(self._source[index % len(self)])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self._clean(e) for e in self._source.__getitems__(list(indices))]
