"""Simulated workers for tools/bench_fleet.py: many in one process, each what a real worker is on the wire.

    python -m tools.benchkit.fleetsim --master URL --prefix P --count N --ramp S --concurrency C --prefetch F --seed K

A simulated worker has its own DEALER (identity = device id), SUB (beacon, device.<id>) and PUSH (heartbeats) and
speaks zmqgrid.protocol's messages: Register with credit, a Heartbeat every heartbeat_interval with psutil metrics,
Results with credit and `started` (the worker's Outbox). It registers after a random delay in [0, --ramp],
re-registers with the real worker's jittered backoff when unanswered, and "runs" a task by holding it:
`zmqgrid.samples:nap` for its seconds, anything else ends at once (done). When all are registered it writes
P + "reg.json" (when each first Register left, how many were sent) in its working folder. SIGTERM ends it.

It imports only what a worker does (zmqgrid's protocol, transport and worker parts), so that its start-up is part
of the registration figures as little as possible.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import resource
import signal
import sys
import time
from pathlib import Path

import zmq

from zmqgrid.protocol import BEACON_TOPIC, Beacon, Error, Heartbeat, Register, RegisterAck, ResultAck, Tasks, decode
from zmqgrid.transport import make_socket, zmtp_heartbeat_ms
from zmqgrid.worker.metrics import sample_metrics, system_info
from zmqgrid.worker.outbox import Outbox
from zmqgrid.worker.results import AttemptResult


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit: each simulated worker is three sockets (and their fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class SimWorker:
    """One simulated worker: its three sockets, credit, held/running tasks and outbox."""

    def __init__(self, sim: "Simulator", device_id: str) -> None:
        self.sim, self.device_id = sim, device_id
        self.dealer = self.sub = self.push = None
        self.incarnation = ""
        self.registered = self.rejoin = False
        self.register_sent, self.backoff = 0.0, 0.5
        self.seq = 0
        self.held: list[dict] = []
        self.running: dict[tuple, dict] = {}
        self.started: list[list] = []
        self.outbox = Outbox(1 << 24)

    def connect(self) -> None:
        if self.dealer is not None:
            self.sim.forget(self.dealer)
        self.dealer = make_socket(self.sim.ctx, zmq.DEALER, identity=self.device_id.encode(), sndhwm=0, rcvhwm=0,
                                  zmtp_heartbeat_ms=self.sim.zmtp_ms)
        self.dealer.connect(self.sim.url)
        self.sim.watch(self.dealer, self)

    def register(self, now: float) -> None:
        running = [list(k) for k in self.running] + [[t["id"], t["attempt"]] for t in self.held]
        credit = max(0, self.sim.capacity - len(running))
        self.outbox.freed = 0
        info = self.sim.info
        self.sim.registers += 1
        if not self.sim.first_sent.get(self.device_id):
            self.sim.first_sent[self.device_id] = time.time()
        self.dealer.send_multipart(Register(
            device_id=self.device_id, name=self.device_id, hostname=info["hostname"], os=info["os"],
            python_version=info["python_version"], python_executable=info["python_executable"], tags=[],
            concurrency=self.sim.concurrency, credit=credit, running=running, outbox=self.outbox.keys(),
            pid=os.getpid(), version="sim").encode())
        self.register_sent, self.registered = now, False

    def on_dealer(self, now: float) -> None:
        while True:
            try:
                msg = decode(self.dealer.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            if isinstance(msg, Tasks):
                self.outbox.ack(msg.acks)
                self.held.extend(msg.tasks)
                self.sim.dirty.add(self)
            elif isinstance(msg, ResultAck):
                self.outbox.ack(msg.keys)
            elif isinstance(msg, RegisterAck):
                self.registered_with(msg, now)
            elif isinstance(msg, Error) and msg.code == "not_registered" and now - self.register_sent > 1.0:
                self.register(now)

    def registered_with(self, msg: RegisterAck, now: float) -> None:
        if self.push is None or msg.incarnation != self.incarnation:
            for sock in (self.sub, self.push):
                if sock is not None:
                    self.sim.forget(sock)
            self.sub = make_socket(self.sim.ctx, zmq.SUB)   # as the real worker's: the beacon is its heartbeat
            for topic in (BEACON_TOPIC, f"device.{self.device_id}".encode()):   # what the master allows
                self.sub.setsockopt(zmq.SUBSCRIBE, topic)
            self.sub.connect(f"tcp://127.0.0.1:{msg.pub_port}")
            self.sim.watch(self.sub, self)
            self.push = make_socket(self.sim.ctx, zmq.PUSH, sndhwm=10)
            self.push.connect(f"tcp://127.0.0.1:{msg.heartbeat_port}")
            self.sim.schedule(now, "beat", self)   # the real sender beats at once, then every interval
        self.incarnation, self.registered, self.backoff = msg.incarnation, True, 0.5
        self.sim.interval_s, self.sim.device_timeout_s = msg.heartbeat_interval_s, msg.device_timeout_s
        self.outbox.resend_all()
        self.sim.dirty.add(self)

    def on_sub(self, now: float) -> None:
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = decode(frames[1:])
            if isinstance(msg, Beacon):
                self.sim.beacons += 1
                if msg.incarnation != self.incarnation and now - self.register_sent > 1.0 and not self.rejoin:
                    self.rejoin = True   # as the real worker: a random part of a quarter of device_timeout later
                    self.sim.schedule(now + random.uniform(0, 0.25 * self.sim.device_timeout_s), "first", self)

    def beat(self, now: float) -> None:
        self.seq += 1
        held = [[t["id"], t["attempt"]] for t in self.held] + self.outbox.keys()
        frames = Heartbeat(device_id=self.device_id, incarnation=self.incarnation, seq=self.seq,
                           running=[list(k) for k in self.running], held=held, metrics=self.sim.metrics,
                           sent_at=time.time(), commands=[]).encode()
        try:
            self.push.send_multipart(frames, zmq.NOBLOCK)
            self.sim.heartbeats += 1
        except zmq.Again:
            pass
        self.sim.schedule(now + self.sim.interval_s, "beat", self)

    def start_held(self, now: float) -> None:
        while self.held and len(self.running) < self.sim.concurrency:
            task = self.held.pop(0)
            key = (task["id"], task["attempt"])
            seconds = task["args"][0] if task.get("function") == "zmqgrid.samples:nap" and task.get("args") else 0
            self.running[key] = {"started_at": time.time()}
            self.started.append(list(key))
            self.sim.schedule(now + float(seconds), "end", self, key)

    def end(self, key: tuple, now: float) -> None:
        run = self.running.pop(key, None)
        if run is None:
            return
        t = time.time()
        self.outbox.add(AttemptResult(key[0], key[1], "done", started_at=run["started_at"], finished_at=t,
                                      duration_s=round(t - run["started_at"], 6)))
        self.sim.tasks_done += 1
        self.sim.dirty.add(self)

    def flush(self, now: float) -> None:
        self.start_held(now)
        if self.registered:
            started, self.started = self.started, []
            for msg in self.outbox.messages(now, started):
                self.dealer.send_multipart(msg.encode())


class Simulator:
    """`count` simulated workers in one process, driven by one poller and a timer heap."""

    def __init__(self, url: str, prefix: str, count: int, ramp_s: float, concurrency: int, prefetch: int,
                 seed: int) -> None:
        self.url, self.concurrency, self.capacity = url, concurrency, concurrency + prefetch
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 3 * count + 64)
        self.poller = zmq.Poller()
        self.owners: dict[zmq.Socket, SimWorker] = {}
        self.timers: list = []
        self.tick = 0
        self.dirty: set[SimWorker] = set()
        self.info = system_info(sys.executable)
        self.metrics = dict(sample_metrics(), **{k: v for k, v in self.info.items()})
        self.interval_s, self.device_timeout_s = 1.0, 2.5
        self.zmtp_ms = zmtp_heartbeat_ms(1.0)   # the real worker's DEALER, default heartbeat_interval
        self.heartbeats = self.beacons = self.tasks_done = self.registers = 0
        self.first_sent: dict[str, float] = {}   # device -> wall time of its first Register
        self.prefix, self.reported = prefix, False
        self.halt = False
        rng = random.Random(seed)
        self.workers = [SimWorker(self, f"{prefix}{i:04d}") for i in range(count)]
        now = time.monotonic()
        for w in self.workers:
            self.schedule(now + rng.uniform(0, ramp_s), "first", w)

    def watch(self, sock: zmq.Socket, owner: SimWorker) -> None:
        self.owners[sock] = owner
        self.poller.register(sock, zmq.POLLIN)

    def forget(self, sock: zmq.Socket) -> None:
        if self.owners.pop(sock, None) is not None:
            self.poller.unregister(sock)
        sock.close(0)

    def schedule(self, at: float, what: str, worker: SimWorker, arg: object = None) -> None:
        self.tick += 1
        heapq.heappush(self.timers, (at, self.tick, what, worker, arg))

    def serve(self) -> None:
        last_metrics = last_report = time.monotonic()
        while not self.halt:
            now = time.monotonic()
            wait_ms = 50 if not self.timers else max(0, min(50, (self.timers[0][0] - now) * 1000))
            for sock, _ in self.poller.poll(wait_ms):
                owner = self.owners.get(sock)
                if owner is not None:
                    (owner.on_dealer if sock is owner.dealer else owner.on_sub)(time.monotonic())
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, what, w, arg = heapq.heappop(self.timers)
                if what == "first":
                    if w.dealer is None:
                        w.connect()
                    w.rejoin = False
                    w.register(now)
                elif what == "beat":
                    w.beat(now)
                elif what == "end":
                    w.end(arg, now)
            for w in self.workers:   # the real worker's backoff: 0.5 s, doubled with jitter 0.8-1.2, at most 10 s
                if w.dealer is not None and not w.registered and now - w.register_sent > w.backoff:
                    w.backoff = min(w.backoff * 2, 10.0) * random.uniform(0.8, 1.2)
                    w.connect()
                    w.register(now)
            dirty, self.dirty = self.dirty, set()
            for w in dirty:
                w.flush(now)
            if not self.reported and all(w.registered for w in self.workers):
                self.reported = True   # for the herd figure: when each Register left, and how many were sent
                Path(f"{self.prefix}reg.json").write_text(json.dumps({"first_sent": list(self.first_sent.values()),
                                                                      "registers": self.registers}))
            if now - last_metrics >= 1.0:   # one psutil sample per process per second, shared by its workers
                last_metrics = now
                self.metrics = dict(sample_metrics(), **self.info)
            if now - last_report >= 5.0:
                last_report = now
                print(f"{time.strftime('%H:%M:%S')} registered={sum(w.registered for w in self.workers)} "
                      f"heartbeats={self.heartbeats} beacons={self.beacons} done={self.tasks_done}", flush=True)
        for sock in list(self.owners) + [w.push for w in self.workers if w.push is not None]:
            sock.close(0)
        self.ctx.term()


def simulate(args: argparse.Namespace) -> int:
    raise_fd_limit()
    sim = Simulator(args.master, args.prefix, args.count, args.ramp, args.concurrency, args.prefetch, args.seed)

    def stop(*_: object) -> None:
        sim.halt = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sim.serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--master", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--ramp", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--prefetch", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    return simulate(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
