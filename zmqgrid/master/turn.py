"""What one turn of the master's loop will send: collected while the turn changes state, sent only once the turn's
ledger writes are committed (or, if the commit fails, refused), so that nothing leaves that the ledger does not hold."""
from __future__ import annotations

import logging
from typing import Protocol

from ..projects.messages import ProjectData
from ..protocol import Error, Finished, Reply, ResultAck, SubmitAcks, Tasks
from .routed import req_id

_STATELESS = (Error.KIND, ProjectData.KIND)   # sent even when the turn's commit fails: they hold no state

logger = logging.getLogger(__name__)
FINISHED_MAX_BYTES = 8 << 20   # half a client's default max_message_bytes
SUBMIT_ACKS_MAX_IDS = 50_000   # per SubmitAcks: far below a client's max_message_bytes (16 MiB) at ~27 bytes an id
# Half a worker's default max_message_bytes: a worker's credit times tasks of 1 MiB of arguments would pass it, and
# a worker's DEALER drops the connection (and with it the tasks) on a message past its MAXMSGSIZE.
TASKS_MAX_BYTES = 8 << 20


class Outlet(Protocol):
    """Where a turn goes: the master's ROUTER (`send`; `task_ids` names the tasks a Tasks message hands over) and
    PUB (`publish`)."""

    def send(self, identity: bytes, frames: list[bytes], task_ids: list[str] | None = None) -> None: ...

    def publish(self, topic: bytes, frames: list[bytes]) -> None: ...


def tasks_messages(tasks: list[dict], acks: list) -> list[tuple[list[dict], list[bytes]]]:
    """(tasks, frames) of the Tasks messages that hand `tasks` over: one, or halves until each is at most
    TASKS_MAX_BYTES (a single task always goes alone); the acks ride on the first."""
    frames = Tasks(tasks, acks).encode()
    if len(frames[1]) <= TASKS_MAX_BYTES or len(tasks) == 1:
        return [(tasks, frames)]
    half = len(tasks) // 2
    return tasks_messages(tasks[:half], acks) + tasks_messages(tasks[half:], [])


def submit_acks_messages(lines: list[list]) -> list[SubmitAcks]:
    """A client's [req_id, ids] lines of one turn as SubmitAcks of at most SUBMIT_ACKS_MAX_IDS ids each
    (a Submit's own ids are never split)."""
    out: list[SubmitAcks] = []
    chunk: list[list] = []
    count = 0
    for line in lines:
        if chunk and count + len(line[1]) > SUBMIT_ACKS_MAX_IDS:
            out.append(SubmitAcks(chunk))
            chunk, count = [], 0
        chunk.append(line)
        count += len(line[1])
    if chunk:
        out.append(SubmitAcks(chunk))
    return out


class Turn:
    """One loop turn's outgoing messages. The master's parts add to the one it owns; `take()` hands the turn over
    (and starts the next one) for `deliver` after a commit or `refuse` after a failed one."""

    def __init__(self) -> None:
        self.acks: list[tuple[bytes, list[bytes]]] = []   # replies that report this turn's writes
        self.submit_acks: dict[bytes, list[list]] = {}    # client -> [req_id, ids] of its batch_acks Submits
        self.result_acks: dict[bytes, list] = {}          # worker -> [task id, attempt] of its results recorded
        self.sends: list[tuple[bytes, list[bytes]]] = []  # errors, answers to queries, commands a worker lacks
        self.dispatched: dict[bytes, list[dict]] = {}     # worker -> the tasks handed to it
        self.notices: dict[bytes, list[dict]] = {}        # client -> summaries of its tasks that ended
        self.publishes: list[tuple[bytes, list[bytes]]] = []   # (topic, frames) for the PUB
        # Tasks that ended this turn, by id: until the commit the ledger still shows them unfinished, so a `watch`
        # or a cancel in the same turn is answered from here.
        self.finished: dict[str, dict] = {}

    def take(self) -> Turn:
        """This turn, handed over whole; the owner goes on collecting the next one."""
        taken = Turn()
        taken.__dict__, self.__dict__ = self.__dict__, taken.__dict__
        return taken

    # ------------------------------------------------------------ collecting

    def ack(self, identity: bytes, frames: list[bytes]) -> None:
        """A reply that reports what this turn wrote: refused if the commit fails."""
        self.acks.append((identity, frames))

    def ack_submit(self, identity: bytes, request: int, ids: list[str]) -> None:
        self.submit_acks.setdefault(identity, []).append([request, ids])

    def ack_results(self, identity: bytes, keys: list) -> None:
        self.result_acks.setdefault(identity, []).extend(keys)

    def send(self, identity: bytes, frames: list[bytes]) -> None:
        """A message to a ROUTER peer; an Error stands even if the commit fails, a Reply is refused."""
        self.sends.append((identity, frames))

    def error(self, identity: bytes, request: int, code: str, message: str) -> None:
        self.sends.append((identity, Error(request, code, message).encode()))

    def dispatch(self, identity: bytes, tasks: list[dict]) -> None:
        self.dispatched.setdefault(identity, []).extend(tasks)

    def ended(self, task_id: str, summary: dict, clients: tuple[bytes, ...]) -> None:
        """A task ended: its summary answers this turn's watches, and goes to each client waiting for it."""
        self.finished[task_id] = summary
        for client in clients:
            self.notices.setdefault(client, []).append(summary)

    def publish(self, topic: bytes, frames: list[bytes]) -> None:
        self.publishes.append((topic, frames))

    # ------------------------------------------------------------ after the commit

    def deliver(self, out: Outlet) -> None:
        """Send the turn after its commit. Tasks first: they are on the way to a result, the replies are not (a
        worker that registered this turn gets its RegisterAck a moment after its first Tasks; it keeps its
        results until the ack). Finished notices before the workers' result acks: a client is waiting on them."""
        result_acks = self.result_acks
        for identity, tasks in self.dispatched.items():
            for part, frames in tasks_messages(tasks, result_acks.pop(identity, [])):
                out.send(identity, frames, [t["id"] for t in part])
        for identity, frames in self.acks:
            out.send(identity, frames)
        for identity, lines in self.submit_acks.items():
            for message in submit_acks_messages(lines):
                out.send(identity, message.encode())
        for identity, frames in self.sends:
            out.send(identity, frames)
        for client, summaries in self.notices.items():
            _send_finished(out, client, summaries)
        for identity, keys in result_acks.items():
            out.send(identity, ResultAck(keys).encode())
        for topic, frames in self.publishes:
            out.publish(topic, frames)

    def refuse(self, out: Outlet, why: str) -> None:
        """The commit failed: nothing of this turn is in the ledger, so nothing of it is acknowledged or dispatched.
        Every request answered from this turn's state gets `unavailable`; refusals (Errors) and a project's
        archive bytes (ProjectData) hold no state and stand. Returns nothing: the owner reloads its view from the ledger."""
        refused = [(identity, req_id([identity, *frames])) for identity, frames in self.acks]
        refused += [(identity, request) for identity, lines in self.submit_acks.items() for request, _ in lines]
        # Answers to queries were read from the in-memory view this turn changed: not to be trusted either.
        refused += [(identity, req_id([identity, *frames])) for identity, frames in self.sends
                    if frames[0][1:2] == Reply.KIND]
        logger.error("%s; this turn's %d acknowledgements withheld", why, len(refused))
        for identity, frames in self.sends:
            if frames[0][1:2] in _STATELESS:
                out.send(identity, frames)
        for identity, request in refused:
            out.send(identity, Error(request, "unavailable", f"the master could not commit: {why}").encode())


def _send_finished(out: Outlet, client: bytes, summaries: list[dict]) -> None:
    """One Finished, or, past FINISHED_MAX_BYTES (values of up to 4 MiB each), halves of it until each fits a
    client's default max_message_bytes (a client that accepts less gets the rest when it watches again)."""
    frames = Finished(summaries).encode()
    if len(frames[1]) <= FINISHED_MAX_BYTES or len(summaries) == 1:
        out.send(client, frames)
        return
    half = len(summaries) // 2
    _send_finished(out, client, summaries[:half])
    _send_finished(out, client, summaries[half:])
