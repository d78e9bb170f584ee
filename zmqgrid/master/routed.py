"""Reading the master's ROUTER: one routed message as frames, and the request id of one that failed to decode."""
from __future__ import annotations

from typing import Any, Callable

import zmq

from ..protocol import unpackb

_NOWAIT = int(zmq.NOBLOCK)


def recv_routed(recv: Callable[..., Any]) -> list[bytes]:
    """One ROUTER message, [identity, frame, ...], or zmq.Again. Plain recv calls: recv_multipart asks the socket
    for RCVMORE after every frame, which costs more than reading the frames. The identity
    is always followed by a frame, and once it is read the whole message is there."""
    frames = [recv(_NOWAIT)]
    frame = recv(_NOWAIT, copy=False)
    frames.append(frame.bytes)
    while frame.more:
        frame = recv(_NOWAIT, copy=False)
        frames.append(frame.bytes)
    return frames


def req_id(frames: list[bytes]) -> int:
    """Best-effort request id of a message that failed, so the error reply can be matched by the client."""
    try:
        body = unpackb(frames[2])
        if isinstance(body, list) and body and isinstance(body[0], int) and not isinstance(body[0], bool):
            return body[0] if 0 <= body[0] < 1 << 63 else 0
    except Exception:  # the body is garbage: there is no id to echo
        return 0
    return 0
