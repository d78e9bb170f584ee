"""The anchor of tools/bench_projects.py: a file's bytes over a bare ZeroMQ DEALER -> ROUTER, as a project's archive
travels (requests of CHUNK bytes, WINDOW in flight, one server process), with nothing else: no hashing, no disk,
no ledger, no protocol beyond an 8-byte offset.

    python bare_fetch.py serve PORT FILE   # a ROUTER on 127.0.0.1:PORT answering offsets with FILE's bytes
    python bare_fetch.py fetch URL SIZE [FOLDER]
        # a DEALER: says "ready", waits for "go" on stdin, fetches SIZE bytes into memory (and, given FOLDER, writes
        # the archive's files under it), says "done SECONDS CPU_SECONDS" and exits

With FOLDER it is the floor of a copy on this disk: the same files written as plainly as a program can (each
folder made once, each file one os.open, os.write and os.close; no check, no hash, no manifest).

The server ends on a request of b"quit" (or when its parent stops it by PID). Every wait is bounded."""
from __future__ import annotations

import io
import os
import struct
import sys
import tarfile
import time
from pathlib import Path

import zmq

CHUNK = 1 << 20   # as a worker asks (zmqgrid.projects.fetch)
WINDOW = 4
TIMEOUT_MS = 120_000


def serve(port: int, path: Path) -> None:
    data = memoryview(path.read_bytes())
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"tcp://127.0.0.1:{port}")
    print("ready", flush=True)
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        if not sock.poll(1000):
            continue
        ident, req = sock.recv_multipart()
        if req == b"quit":
            break
        (offset,) = struct.unpack("!Q", req)
        sock.send_multipart([ident, data[offset:offset + CHUNK]], copy=False)
    sock.close(0)
    ctx.term()


def write_files(archive: bytearray, into: Path) -> None:
    view, made = memoryview(archive), set()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar:
            path = os.path.join(into, member.name.rstrip("/"))
            folder = path if member.isdir() else os.path.dirname(path)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            if member.isreg():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
                data = view[member.offset_data:member.offset_data + member.size]
                while data:
                    data = data[os.write(fd, data):]
                os.close(fd)


def fetch(url: str, size: int, folder: Path | None) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.connect(url)
    sock.send(struct.pack("!Q", size))   # past the end: an empty answer, once connected
    sock.recv()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    t0 = time.perf_counter()
    into = bytearray(size)
    asked = got = 0
    while got < size:
        while asked < size and asked - got < WINDOW * CHUNK:
            sock.send(struct.pack("!Q", asked))
            asked += CHUNK
        frame = sock.recv(copy=False)
        into[got:got + len(frame.buffer)] = frame.buffer   # one DEALER to one ROUTER keeps the answers' order
        got += len(frame.buffer)
    if folder is not None:
        write_files(into, folder)
    print(f"done {time.perf_counter() - t0:.6f} {time.process_time():.6f}", flush=True)
    sock.close(0)
    ctx.term()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        fetch(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]) if len(sys.argv) > 4 else None)
