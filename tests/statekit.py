"""Helpers for the state-region tests: forked worker processes and deterministic folds."""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np


def fork(fn: Callable[..., Any], *args: Any) -> int:
    """Run ``fn(*args)`` in a forked child (a real process); exit 0 on success, 3 on an
    exception (printed), so the parent sees what happened with :func:`reap`."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn(*args)
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    return pid


def reap(pid: int, timeout: float = 30.0) -> int:
    """Wait for a child; its exit status (negative: killed by that signal)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"child {pid} did not finish within {timeout} s")
        time.sleep(0.002)


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.001)


# ---- an order book keyed by symbol: the fold the recovery tests replay --------------

BOOK = np.dtype([("bid_px", "<f8", (4,)), ("bid_qty", "<i8", (4,)), ("ask_px", "<f8", (4,)),
                 ("ask_qty", "<i8", (4,)), ("last_seq", "<u8"), ("updates", "<u8"),
                 ("position", "<i8"), ("cash", "<f8")])
ORDER = np.dtype([("symbol", "<u4"), ("side", "<u1"), ("level", "<u1"), ("kind", "<u2"),
                  ("px", "<f8"), ("qty", "<i8")])
SYMBOLS = 64


def make_orders(n: int, seed: int = 7, symbols: int = SYMBOLS) -> np.ndarray:
    """``n`` deterministic market-data events (quotes at a level, and fills)."""
    rng = np.random.default_rng(seed)
    o = np.zeros(n, ORDER)
    o["symbol"] = rng.integers(0, symbols, n)
    o["side"] = rng.integers(0, 2, n)
    o["level"] = rng.integers(0, 4, n)
    o["kind"] = rng.integers(0, 10, n) == 0  # 1 in 10 is a fill
    o["px"] = np.round(100 + rng.normal(0, 1, n), 2)
    o["qty"] = rng.integers(1, 100, n)
    return o


def apply_order(state: Any, record: Any, increment: int = 1) -> None:
    """The order-book builder's fold: one record changes one symbol's row."""
    o = np.frombuffer(record.data, ORDER, count=1)[0]
    sym = int(o["symbol"])
    if sym >= state.state.rows:
        return
    with state.update(sym) as row:
        lvl = int(o["level"]) & 3
        if o["kind"]:
            sign = 1 if o["side"] == 0 else -1
            row["position"] += sign * int(o["qty"])
            row["cash"] -= sign * float(o["qty"]) * float(o["px"])
        elif o["side"] == 0:
            row["bid_px"][lvl] = o["px"]
            row["bid_qty"][lvl] = o["qty"]
        else:
            row["ask_px"][lvl] = o["px"]
            row["ask_qty"][lvl] = o["qty"]
        row["last_seq"] = record.sequence
        row["updates"] += increment


def apply_order_v2(state: Any, record: Any) -> None:
    """A new version of the fold that counts updates twice: it folds differently, so a
    handover to it must copy the rows where the two versions disagree."""
    apply_order(state, record, increment=2)


def fold_into(book: np.ndarray, orders: np.ndarray, first_seq: int = 0,
              v2_after: int | None = None) -> np.ndarray:
    """Fold ``orders`` (sequences ``first_seq``..) into ``book`` in place, in plain numpy:
    the reference the tests compare regions with."""
    for k in range(len(orders)):
        o = orders[k]
        row = book[int(o["symbol"])]
        lvl = int(o["level"]) & 3
        if o["kind"]:
            sign = 1 if o["side"] == 0 else -1
            row["position"] += sign * int(o["qty"])
            row["cash"] -= sign * float(o["qty"]) * float(o["px"])
        elif o["side"] == 0:
            row["bid_px"][lvl] = o["px"]
            row["bid_qty"][lvl] = o["qty"]
        else:
            row["ask_px"][lvl] = o["px"]
            row["ask_qty"][lvl] = o["qty"]
        row["last_seq"] = first_seq + k
        row["updates"] += 2 if v2_after is not None and first_seq + k > v2_after else 1
    return book


def reference_book(orders: np.ndarray, first_seq: int = 0, symbols: int = SYMBOLS,
                   upto: int | None = None, v2_after: int | None = None) -> np.ndarray:
    """The fold of records ``first_seq ..`` (``upto`` exclusive) from an empty book;
    records after sequence ``v2_after`` are folded as ``apply_order_v2`` does."""
    n = len(orders) if upto is None else upto - first_seq
    return fold_into(np.zeros(symbols, BOOK), orders[:n], first_seq, v2_after)
