"""Small callables for the demo batch and for trying `submit --python` (importable on every worker)."""
from __future__ import annotations

import hashlib
import time


def fib(n: int) -> int:
    """The n-th Fibonacci number, the slow way: a little real CPU work."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def word_count(text: str) -> dict:
    counts: dict[str, int] = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts


def checksum(data: str, rounds: int = 10_000) -> str:
    digest = data.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def noop(x: object = None) -> object:
    return x
