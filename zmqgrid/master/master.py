"""The master daemon: owns ROUTER, PUB and PULL, runs the poll loop and group-commits once per turn."""
from __future__ import annotations

import gc
import logging
import secrets
import threading
import time

import zmq
from zmq.auth.thread import ThreadAuthenticator

from ..alerts.book import Alerts
from ..alerts.delivery import Delivery, Settings
from ..config import Config
from ..errors import ProtocolError, StoreError
from ..model import DeviceState
from ..protocol import BEACON_TOPIC, Beacon, Heartbeat, decode
from ..security import master_curve, require_safe_bind
from ..store.project_store import ProjectStore, folder_of
from ..store.retention import Retention, RetentionTimer
from ..store.task_store import TaskStore
from ..text import printable
from ..transport import ZAP_DOMAINS, bind, make_socket, send_frames, zmtp_heartbeat_ms
from .awake import AwakePoller
from .board import Board
from .turn import Turn
from .fleet import raise_fd_limit
from .guard import CUT_OFF, Guard, pull_connection, user_id
from .handlers import Handlers
from .keyring import KeyRing
from .fetches import Fetches
from .projects import Projects
from .syncs import Syncs
from .recovery import recover
from .refusals import RefusalLog
from .routed import recv_routed, req_id
from .schedules import Schedules
from .strategies import make_strategy
from .subscriptions import SUBSCRIPTION_MAX_BYTES, SUBSCRIPTION_MAX_BYTES_CURVE, PubAdmission, Subscriptions

logger = logging.getLogger(__name__)
# A turn reads at most this many ROUTER messages: a client's flood of one-task Submits then takes turns of a few ms,
# each of which also takes the workers' results and dispatches again, instead of 1,000-Submit turns of 50 ms that
# left the workers idle (batched and big submits are not slowed by the cap).
ROUTER_DRAIN_PER_TURN = 64
HEARTBEATS_PER_TURN = 1000   # heartbeats are cheap and commit together: 1,000 workers' second in one turn
_NOWAIT = int(zmq.NOBLOCK)


class Master:
    """Run with `serve()`; `stop()` (any thread, or a signal handler) ends the loop after the current turn."""

    def __init__(self, config: Config) -> None:
        self.config = config
        require_safe_bind(config)   # an open non-loopback bind is refused (or, with --insecure, warned about)
        self.strategy = make_strategy(config.load_balance_strategy)   # a bad one is refused before binding
        curve = master_curve(config)   # a missing key file is refused before the ledger or any socket is opened
        raise_fd_limit()   # three connections per worker
        self.incarnation = secrets.token_hex(6)
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.delivery: Delivery | None = None   # alert delivery, made once the ledger and sockets are
        self.store = TaskStore(config.db_path, config.durability)
        self.store.checkpoint_in_background()
        self.ctx = zmq.Context()
        self.keyring: KeyRing | None = None
        self.guard: Guard | None = None
        self.auth: ThreadAuthenticator | None = None
        if curve is not None:
            self.keyring = KeyRing(self.store, config.authorized_keys_dir, time.time())
            self.store.commit()
            self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("zmqgrid.zap"))
            self.auth.start()
            for domain in set(ZAP_DOMAINS.values()):
                self.auth.configure_curve_callback(domain.decode(), self.keyring)
            # The PUB is for workers only: a client or admin key has nothing to receive there (Subscriptions).
            self.auth.configure_curve_callback(ZAP_DOMAINS[zmq.XPUB].decode(), PubAdmission(self.keyring))
        size = config.max_message_bytes
        self.router = make_socket(self.ctx, zmq.ROUTER, max_message_bytes=size, sndhwm=0, rcvhwm=0, curve=curve)
        # ZMTP heartbeats drop a subscriber that stopped answering, instead of buffering for it forever. Its own
        # MAXMSGSIZE: it receives subscriptions only, and a longer one is dropped with its connection by libzmq.
        self.pub = make_socket(self.ctx, zmq.XPUB, curve=curve,
                               max_message_bytes=SUBSCRIPTION_MAX_BYTES_CURVE if curve else SUBSCRIPTION_MAX_BYTES,
                               zmtp_heartbeat_ms=zmtp_heartbeat_ms(config.heartbeat_interval))
        self.subscriptions = Subscriptions(self.ctx, self.pub, self.keyring)
        self.pull = make_socket(self.ctx, zmq.PULL, max_message_bytes=size, curve=curve)
        try:
            for sock, endpoint in ((self.router, config.router_endpoint), (self.pub, config.pub_endpoint),
                                   (self.pull, config.heartbeat_endpoint)):
                bind(sock, endpoint)
        except Exception:
            self.close()
            raise
        self.subscriptions.bound(config.pub_port)
        self.settings = {"pub_port": config.pub_port, "heartbeat_port": config.heartbeat_port,
                         "heartbeat_interval_s": float(config.heartbeat_interval),
                         "device_timeout_s": float(config.device_timeout),
                         "router": config.router_endpoint, "bad_messages": 0,
                         "subscriptions": self.subscriptions.counts}
        self.turn = Turn()   # what this loop turn sends, after its commit
        self.unreachable: list[str] = []   # devices a dispatch could not reach, their attempts lost next turn
        self.alerts = Alerts(self.store)
        self.alerts.load()
        # Online when the master last stopped: recovery marks them offline; one that does not come back is an event
        self.alerts.await_devices([d for d in self.store.list_devices() if d["state"] == DeviceState.ONLINE],
                                  time.monotonic() + float(config.device_timeout))
        self.board = self._new_board()
        self.schedules = Schedules(self.store)
        self.retention = RetentionTimer(Retention(self.store.db, config.retention_days, config.retention_max_tasks),
                                        time.monotonic())
        self.handlers = Handlers(self.board, self.settings, self.schedules)
        self.handlers.alerts = self.alerts
        self.delivered_seq = self.alerts.seq   # the last event seq the delivery threads were woken for
        # Beside the loop, with connections of its own: a slow endpoint never delays a turn (docs: Alerts)
        self.delivery = None if config.db_path == ":memory:" else Delivery(
            config.db_path, Settings(float(config.alert_retry), float(config.alert_retry_max),
                                     float(config.alert_timeout)))
        self.projects = Projects(ProjectStore(self.store, folder_of(config.db_path)), config.max_project_mb,
                                 config.max_project_files)
        self.handlers.projects = self.schedules.projects = self.projects   # submits and firings pin by it
        self.projects.retain(config.project_keep_versions, self.handlers._pinned)
        self.syncs = self.handlers.syncs = self.projects.syncs = Syncs(self.board.fleet, self.projects)
        self.fetches = self.handlers.fetches = Fetches(self.projects.store.archive, self.syncs.allows)
        self.refusals = RefusalLog("keys" if curve else "connections")   # one log budget for what peers get wrong
        if self.keyring is not None:
            self.handlers.peers = {}
            self.handlers.keyring = self.keyring
            self.guard = Guard(self.keyring, self.handlers, self.settings, self.refusals)
        logger.info("master incarnation=%s bound router=%s pub=%d heartbeat=%d db=%s curve=%s", self.incarnation,
                    self.settings["router"], config.pub_port, config.heartbeat_port, config.db_path,
                    "on" if curve else "off")

    def _new_board(self, reloading: bool = False) -> Board:
        c = self.config
        board = Board(self.store, self.turn, incarnation=self.incarnation, strategy=self.strategy,
                          default_retries=c.max_retry_count, default_timeout_s=c.task_timeout or None,
                          device_timeout_s=float(c.device_timeout),
                          lease_grace_s=max(2 * float(c.heartbeat_interval), 1.0),
                          retry_backoff_s=c.retry_backoff, retry_backoff_max_s=c.retry_backoff_max,
                          quarantine_after=c.quarantine_after, max_output_bytes=c.max_output_bytes,
                          max_queued_per_client=c.max_queued_per_client)
        board.alerts = board.fleet.alerts = self.alerts
        recover(board, time.monotonic(), time.time())
        try:
            self.store.commit()
        except StoreError as e:
            if not reloading:
                raise
            # The view just read from the ledger stands: only recovery's bookkeeping (online devices marked
            # offline) is lost. Falling back to the old view would keep this turn's refused tasks, and a client
            # resubmitting them would be acknowledged for tasks the ledger does not hold.
            logger.error("ledger reloaded, its bookkeeping not written (%s)", e)
        return board

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self.delivery is not None:
            self.delivery.stop()
        self.subscriptions.close()
        for sock in (self.router, self.pub, self.pull):
            sock.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        self.store.close()

    # ------------------------------------------------------------ the loop

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.pull, zmq.POLLIN)
        subscriptions = self.subscriptions
        poller.register(self.pub, zmq.POLLIN)
        poller.register(subscriptions.monitor, zmq.POLLIN)
        awake = AwakePoller(poller, self.config.awake_poll_us / 1e6)
        beacon_every = min(float(self.config.heartbeat_interval), 1.0)
        check_every = float(self.config.timeout_check_interval)
        next_beacon = next_check = next_prune = next_devices = time.monotonic()
        device_retention_s = float(self.config.device_retention_days) * 86400
        # Python's collector walks every live object in its oldest generation, which here grows with the task
        # map, so a big submit spent much of its time in full collections with the defaults. The state loaded so far
        # is frozen out of collection; later cycles (rare here) are still collected, in rarer full passes.
        gc.freeze()
        gc.set_threshold(50_000, 20, 1000)
        if self.delivery is not None:
            self.delivery.start()
        self.ready.set()
        try:
            while not self._stop.is_set():
                now_mono = time.monotonic()
                due_in = self.schedules.seconds_until_due(time.time())
                wait_ms = max(0, min(next_beacon, next_check, now_mono + 0.1, now_mono + due_in) - now_mono) * 1000
                if self.fetches.waiting():   # chunks wait for this turn: no sleep
                    wait_ms = 0
                events = awake.poll(wait_ms)
                now_mono, now = time.monotonic(), time.time()
                if self.router in events:
                    self._drain_router(now_mono, now)
                    self.handlers.apply_submits(now)
                if self.pull in events:
                    self._drain_pull(now_mono, now)
                if self.pub in events or subscriptions.monitor in events:
                    subscriptions.drain()
                if now_mono >= next_check:
                    next_check = now_mono + check_every
                    self.board.check_liveness(now_mono, now)
                    self.projects.expire(now_mono)
                    self.refusals.tick()   # a window's summary comes out on an idle master too
                    if self.alerts.awaited:
                        self.alerts.check_awaited(self.board.fleet.devices, now_mono, now)
                    if self.keyring is not None:
                        self._apply_key_changes(now_mono, now)
                        subscriptions.recheck()
                if now_mono >= next_prune:
                    next_prune = now_mono + 60
                    self.store.prune_heartbeats(self.config.heartbeat_retention)
                if device_retention_s and now_mono >= next_devices:
                    next_devices = now_mono + min(60.0, max(0.5, device_retention_s / 4))
                    self._prune_devices(now, device_retention_s)
                self._fire_schedules(now)
                self.board.dispatch(now_mono, now)
                self.fetches.serve(self.turn.send, self.turn.error)
                busy = self.router in events or bool(self.turn.dispatched)
                self._commit_and_send(now_mono, now)
                awake.after_turn(busy)
                self.retention.run(now_mono, now)   # its own transaction, a bounded chunk, after the turn's
                if now_mono >= next_beacon:
                    next_beacon = now_mono + beacon_every
                    self.pub.send_multipart([BEACON_TOPIC, *Beacon(self.incarnation, now).encode()])
        finally:
            logger.info("master stopping incarnation=%s", self.incarnation)
            self.close()

    def _bad(self, peer: str, shown: str, error: Exception) -> None:
        """Count a message that did not decode; log it within the refusal budget. `peer` (a key, or a routing id
        when open) counts distinct senders; `shown` names it in the line."""
        self.settings["bad_messages"] += 1
        self.refusals.write(peer, logging.WARNING, "bad message from %s: %s", shown, printable(error, 200))

    def _drain_router(self, now_mono: float, now: float) -> None:
        recv, guard, key = self.router.recv_multipart, self.guard, None
        self.refusals.tick()   # the summary of a window's refused messages, once it has passed
        for _ in range(ROUTER_DRAIN_PER_TURN):
            try:
                if guard is None:
                    frames = recv_routed(self.router.recv)
                else:   # CURVE: the User-Id (the peer's key) is read from the message's metadata, then trusted
                    parts = recv(zmq.NOBLOCK, copy=False)
                    key, frames = user_id(parts[-1]), [part.bytes for part in parts]
            except zmq.Again:
                return
            identity = frames[0]
            try:
                # CURVE: the key is looked up before anything is decoded (a key nobody accepted gets 8 KiB at most)
                if guard is not None and not guard.screen(identity, key, frames, now):
                    continue
                msg = decode(frames[1:])
                if guard is None or guard.admit(identity, key, msg, now):
                    self.handlers.on_router(identity, msg, now_mono, now)
            except ProtocolError as e:
                self._bad(key or identity.hex(), f"key {key[:8]}..." if key else f"router peer {identity.hex()}", e)
                self.handlers.reply_error(identity, req_id(frames), "bad_message", str(e))
            except StoreError as e:
                logger.error("ledger read failed: %s", e)
                self.handlers.reply_error(identity, req_id(frames), "unavailable", str(e))
            except Exception:  # a handler bug must not stop the master; the peer still gets an answer
                # within the refusal budget: a peer that found such a bug must not fill the log with tracebacks
                self.refusals.write(key or identity.hex(), logging.ERROR, "handler failed for %s",
                                    f"key {key[:8]}..." if key else f"router peer {identity.hex()}", exc_info=True)
                self.handlers.reply_error(identity, req_id(frames), "bad_request", "the master could not handle this")

    def _drain_pull(self, now_mono: float, now: float) -> None:
        recv, guard, key, connection = self.pull.recv_multipart, self.guard, None, None
        self.refusals.tick()
        for _ in range(HEARTBEATS_PER_TURN):
            try:
                if guard is None:
                    frames = recv(zmq.NOBLOCK)
                else:
                    parts = recv(zmq.NOBLOCK, copy=False)
                    key, frames = user_id(parts[-1]), [part.bytes for part in parts]
                    connection = pull_connection(parts[-1])
            except zmq.Again:
                return
            try:
                if guard is not None and not guard.screen_heartbeat(key, connection):
                    continue
                msg = decode(frames)
                if not isinstance(msg, Heartbeat):
                    raise ProtocolError(f"{type(msg).__name__} does not belong on the heartbeat socket")
                if guard is None or guard.admit_heartbeat(key, msg, connection):
                    self.handlers.on_heartbeat(msg, now_mono, now)
            except ProtocolError as e:
                self._bad(key or "heartbeat socket", f"key {key[:8]}... on the heartbeat socket" if key
                          else "the heartbeat socket", e)
            except Exception:   # a bug a peer found: logged within the refusal budget, like the ROUTER's
                self.refusals.write(key or "heartbeat socket", logging.ERROR, "heartbeat handling failed for %s",
                                    f"key {key[:8]}..." if key else "the heartbeat socket", exc_info=True)

    def _commit_and_send(self, now_mono: float, now: float) -> None:
        """Nothing of a turn leaves before its commit: the turn is sent after it, or refused if it fails."""
        turn = self.turn.take()
        try:
            self.store.commit()
        except StoreError as e:
            # The in-memory view is rebuilt from the ledger; workers re-register when told they are unknown.
            turn.refuse(self, e.message)
            self.board = self._new_board_safely()
            self.handlers.board = self.board
            self.schedules.reload()   # this turn's firings were not committed: they fire again, with the same ids
            self.alerts.reload()      # nor were its rule changes and events (their seqs are used again)
            return
        turn.deliver(self)
        if self.delivery is not None and self.alerts.seq != self.delivered_seq:   # the commit wrote alert events
            self.delivered_seq = self.alerts.seq
            self.delivery.wake()
        # Staged now, committed with the next turn: the attempts dispatched to a worker the ROUTER cannot reach
        unreachable, self.unreachable = self.unreachable, []
        for device_id in unreachable:
            self.board.dispatch_failed(device_id, now_mono, now)

    def _apply_key_changes(self, now_mono: float, now: float) -> None:
        """A `keys` command changed the ledger: a key no longer accepted loses its device at once (ZAP refuses its
        next handshake, the Guard every message it still sends), a worker key cut off is told (`E revoked`: it
        stops), a newly accepted pending worker to register again (it gets tasks without waiting for its backoff)."""
        ring = self.keyring
        for key, old, row in ring.refresh():
            told = row["state"] in CUT_OFF and row["role"] == "worker" and key in ring.peers
            logger.info("key %s: %s -> %s (role %s)%s", key[:8], old or "unknown", row["state"], row["role"],
                        "; its worker is told to stop" if told else "")
            device = self.board.fleet.devices.get(row["device_id"] or "")
            if device is not None and (row["state"] != "accepted" or row["role"] != "worker"):
                # Cut off alive: its running tasks are lost, but no worker died for them (nothing towards quarantine)
                self.board.mark_offline(device, f"key {key[:8]}... {row['state']}", now_mono, now,
                                          died=False)
                self.handlers.peers = {i: d for i, d in self.handlers.peers.items() if d != device.device_id}
            if row["state"] == "revoked" and old != "revoked" and row["role"] == "worker":
                info = device.info if device is not None else {"name": row["name"], "hostname": row["hostname"]}
                self.alerts.device_event("revoked", row["device_id"] or f"key {key[:8]}...", info,
                                         device.tags if device is not None else frozenset(),
                                         f"key {key[:8]}... revoked", now)
            if told:
                self.handlers.reply_error(ring.peers.pop(key), 0, "revoked", ring.cut_off(key))
            elif row["state"] == "accepted" and key in ring.peers:
                self.handlers.reply_error(ring.peers[key], 0, "not_registered", "key accepted: register")

    def _prune_devices(self, now: float, retention_s: float) -> None:
        """Long-offline devices that hold nothing leave the device table (staged: they go with this turn's commit)."""
        try:
            if self.board.fleet.prune_offline(now, retention_s):
                self.syncs.forget_gone()   # their cache reports and fetch grants go with them
        except StoreError as e:   # the next pass tries again
            logger.warning("%s", e.message)

    def _fire_schedules(self, now: float) -> None:
        """Submit the tasks of the schedule ticks due now; they commit with the schedules' progress, in this turn."""
        specs = self.schedules.fire_due(now)
        if specs:
            try:
                self.board.submit(specs, b"", False, now)
            except Exception:  # a ledger read failed: the ticks fire again next turn (same ids), the loop goes on
                logger.exception("submitting %d scheduled tasks failed", len(specs))
                self.schedules.reload()

    def _new_board_safely(self) -> Board:
        try:
            return self._new_board(reloading=True)
        except StoreError as e:
            logger.error("ledger reload failed (%s); keeping the previous view", e)
            return self.board

    # ------------------------------------------------------------ the turn's outlet

    def send(self, identity: bytes, frames: list[bytes], task_ids: list[str] | None = None) -> None:
        try:
            send_frames(self.router, [identity, *frames], _NOWAIT)
        except zmq.ZMQError as e:
            if task_ids:
                logger.warning("dispatch to %r failed (%s); re-queueing %d tasks", identity, e.strerror, len(task_ids))
                peers = self.handlers.peers
                device_id = identity.decode("utf-8", "replace") if peers is None else peers.get(identity, "")
                self.unreachable.append(device_id)
            else:
                logger.debug("reply to gone peer %r dropped (%s)", identity, e.strerror)

    def publish(self, topic: bytes, frames: list[bytes]) -> None:
        self.pub.send_multipart([topic, *frames])
