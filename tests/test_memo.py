"""The per-process memo behind the masks, PRO regions, backbone skeletons and PCA fits."""

from __future__ import annotations

import threading

import pytest

from dfmx.memo import Memo


def test_hits_do_not_remake_and_the_least_recently_used_goes() -> None:
    made: list[str] = []
    memo: Memo[str] = Memo(2)

    def make(key: str):
        return lambda: made.append(key) or key.upper()

    assert memo.get("a", make("a")) == "A"
    assert memo.get("b", make("b")) == "B"
    assert memo.get("a", make("a")) == "A"  # a hit: "a" is now the most recent
    assert memo.get("c", make("c")) == "C"  # drops "b", the least recently used
    assert len(memo) == 2
    assert memo.get("a", make("a")) == "A"
    assert memo.get("b", make("b")) == "B"
    assert made == ["a", "b", "c", "b"]
    memo.clear()
    assert len(memo) == 0


def test_a_failing_make_stores_nothing() -> None:
    memo: Memo[int] = Memo(1)

    def fail() -> int:
        raise OSError("unreadable")

    with pytest.raises(OSError, match="unreadable"):
        memo.get("k", fail)
    assert len(memo) == 0
    assert memo.get("k", lambda: 3) == 3


def test_threads_share_one_memo() -> None:
    memo: Memo[int] = Memo(8)
    results: list[int] = []

    def work(i: int) -> None:
        for j in range(200):
            results.append(memo.get(j % 16, lambda j=j: j % 16))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 800 and len(memo) == 8
    assert sorted(set(results)) == list(range(16))


def test_weighed_values_fill_the_size_by_weight() -> None:
    memo: Memo[bytes] = Memo(10, weigh=len)
    memo.put("a", b"x" * 4)
    memo.put("b", b"x" * 5)
    assert memo.peek("a") == b"x" * 4  # "a" is now the most recent
    memo.put("c", b"x" * 3)  # 12 > 10: drops "b", the least recently used
    assert memo.peek("b") is None and len(memo) == 2
    memo.put("d", b"x" * 11)  # heavier than the whole size: not kept, nothing dropped
    assert memo.peek("d") is None and len(memo) == 2
    memo.put("a", b"x" * 7)  # replacing "a" counts its new weight only: 7 + 3
    assert memo.peek("a") == b"x" * 7 and memo.peek("c") == b"x" * 3


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        Memo(0)
