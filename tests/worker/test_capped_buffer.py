"""The output cap keeps the stream's first half-cap bytes and its last half-cap bytes, and says how much it cut."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zmqgrid.worker.pypool import CappedBuffer


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 64), st.lists(st.binary(max_size=40), max_size=60), st.integers(1, 50))
def test_the_buffer_keeps_the_head_and_the_tail_of_the_whole_stream(cap, chunks, coalesce_bytes):
    buffer = CappedBuffer("stdout", cap)
    buffer.coalesce_bytes = coalesce_bytes
    for chunk in chunks:
        buffer.write(chunk)
    stream = b"".join(chunks)
    head_cap = cap // 2
    head, rest = stream[:head_cap], stream[head_cap:]
    tail = rest[max(0, len(rest) - (cap - head_cap)):] if cap - head_cap else b""
    cut = len(rest) - len(tail)
    if cut:
        expected = (head.decode("utf-8", "replace") + f"\n[... zmqgrid: {cut} bytes of stdout cut ...]\n"
                    + tail.decode("utf-8", "replace"))
    else:
        expected = (head + tail).decode("utf-8", "replace")
    assert buffer.total == len(stream)
    assert buffer.text() == expected


def test_a_100_mb_stream_in_1_mb_reads_keeps_only_about_the_cap_in_memory():
    buffer = CappedBuffer("stdout", 1 << 20)
    chunk = b"x" * (1 << 20)
    for _ in range(100):
        buffer.write(chunk)
    assert buffer._tail_len <= (1 << 19) + len(chunk)
    assert len(buffer.text()) < (1 << 20) + 100
    assert f"{100 * (1 << 20) - (1 << 20)} bytes of stdout cut" in buffer.text()


def test_a_stream_of_tiny_writes_is_gathered_into_few_chunks():
    buffer = CappedBuffer("stdout", 1 << 20)
    for i in range(400_000):
        buffer.write(b"%d\n" % (i % 10))
    assert len(buffer._tail) <= 2 * ((1 << 19) // buffer.coalesce_bytes) + 2
    assert buffer._tail_len <= (1 << 19) + buffer.coalesce_bytes
    assert buffer.text().endswith("8\n9\n")
