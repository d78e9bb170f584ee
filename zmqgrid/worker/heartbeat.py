"""Heartbeats from their own thread and PUSH socket, so a busy worker loop can never starve them."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import zmq

from ..protocol import Heartbeat
from ..transport import Curve, connect, make_socket
from .metrics import sample_metrics

logger = logging.getLogger(__name__)


class HeartbeatSender(threading.Thread):
    """Sends a Heartbeat (device, incarnation, running, held, metrics) every interval until stop()."""

    def __init__(self, ctx: zmq.Context, endpoint: str, device_id: str, interval_s: float,
                 owned: Callable[[], tuple[list, list, list, list | None]], with_metrics: bool, max_message_bytes: int,
                 info: dict | None = None, curve: Curve | None = None,
                 about: Callable[[], dict] | None = None) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.ctx, self.endpoint, self.device_id = ctx, endpoint, device_id
        self.interval_s, self.owned, self.with_metrics = interval_s, owned, with_metrics
        self.max_message_bytes, self.curve = max_message_bytes, curve
        # Who this worker is travels with every heartbeat too, so the master's view heals by itself.
        self.info = {k: v for k, v in (info or {}).items()
                     if k in ("hostname", "os", "python_version", "python_executable", "cpu_count", "memory_total_mb")}
        self.about = about   # figures of the moment beside the metrics (the prefetch it runs with)
        self.incarnation = ""
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=2 * self.interval_s + 1)

    def run(self) -> None:
        # SNDHWM small + IMMEDIATE (in make_socket): nothing piles up while the master is away.
        sock = make_socket(self.ctx, zmq.PUSH, max_message_bytes=self.max_message_bytes, sndhwm=10,
                           curve=self.curve)
        connect(sock, self.endpoint)
        seq = 0
        try:
            while not self._halt.is_set():
                seq += 1
                running, held, commands, projects = self.owned()
                metrics = dict(sample_metrics(), **self.info) if self.with_metrics else dict(self.info)
                if self.about is not None:
                    metrics.update(self.about())
                frames = Heartbeat(device_id=self.device_id, incarnation=self.incarnation, seq=seq, running=running,
                                   held=held, metrics=metrics, sent_at=time.time(), commands=commands,
                                   projects=projects).encode()
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:
                    logger.debug("heartbeat %d not sent: master not connected", seq)
                self._halt.wait(self.interval_s)
        finally:
            sock.close(0)
