"""The demo strategy's state: a per-instrument book and position table, folded from ticks.

One row per instrument: the last quote (bid, ask, sizes, sequence, timestamp), how many
ticks it saw, and the position and notional of a toy strategy that buys ``ask_size /
100`` lots on every 16th sequence and sells ``bid_size / 100`` lots 8 sequences later.
Positions and notionals are integers (prices in 1/10000), and everything else is "last
occurrence wins", so the fold gives the same bits whatever the batches are cut into: the
region kept by ``pyshm run`` (``apply_batch``) and the reference the demo's strategy
consumer folds from the full stream can be compared byte for byte.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOOK = np.dtype([("bid", "<f8"), ("ask", "<f8"), ("bid_size", "<u4"), ("ask_size", "<u4"),
                 ("last_seq", "<u8"), ("last_ts", "<i8"), ("ticks", "<u8"),
                 ("position", "<i8"), ("notional", "<i8")])
assert BOOK.itemsize == 64


def fold(book: np.ndarray, ticks: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """Fold ``ticks`` (the demo's TICK records, sequences ``seqs``) into ``book`` in
    place; returns the instruments touched. Ticks for instruments beyond the book are
    ignored (never index with unchecked shared data)."""
    ins = ticks["instrument"].astype(np.int64)
    ok = ins < len(book)
    if not ok.all():
        ticks, seqs, ins = ticks[ok], seqs[ok], ins[ok]
    if not len(ins):
        return np.empty(0, np.int64)
    seqs = seqs.astype(np.uint64)
    np.add.at(book["ticks"], ins, np.uint64(1))
    # last occurrence per instrument
    _, first_rev = np.unique(ins[::-1], return_index=True)
    last = len(ins) - 1 - first_rev
    u = ins[last]
    for name in ("bid", "ask", "bid_size", "ask_size"):
        book[name][u] = ticks[name][last]
    book["last_seq"][u] = seqs[last]
    book["last_ts"][u] = ticks["ts_ns"][last]
    buy = seqs % np.uint64(16) == 0
    sell = seqs % np.uint64(16) == 8
    if buy.any():
        q = (ticks["ask_size"][buy] // 100).astype(np.int64)
        px = np.round(ticks["ask"][buy] * 1e4).astype(np.int64)
        np.add.at(book["position"], ins[buy], q)
        np.add.at(book["notional"], ins[buy], -q * px)
    if sell.any():
        q = (ticks["bid_size"][sell] // 100).astype(np.int64)
        px = np.round(ticks["bid"][sell] * 1e4).astype(np.int64)
        np.add.at(book["position"], ins[sell], -q)
        np.add.at(book["notional"], ins[sell], q * px)
    return np.unique(u)


def apply_batch(writer: Any, batch: Any) -> None:
    """``apply_batch`` for ``pyshm run`` (``states:``): fold a batch of tick records into
    the region, writing back only the rows it touched (one transaction per batch)."""
    from ..demo import TICK, TICK_TYPE

    keep = batch.types == TICK_TYPE
    if not keep.any():
        return
    ticks = batch.array(TICK)
    seqs = batch.sequences
    if not keep.all():
        ticks, seqs = ticks[keep], seqs[keep]
    rows = writer.to_numpy()
    touched = fold(rows, ticks, seqs)
    if len(touched):
        writer.write_batch(touched, rows[touched])
