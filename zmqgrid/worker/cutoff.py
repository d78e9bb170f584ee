"""How a worker learns that the master cut its key off (revoked, or rejected while pending): `E revoked` on its
DEALER, or ZAP's refusal of the DEALER's CURVE handshake, seen by a socket monitor. Either way it stops with
EXIT_KEY_REFUSED (docs/architecture.md, "A worker whose key is cut off")."""
from __future__ import annotations

import logging

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..text import printable

logger = logging.getLogger(__name__)
ZAP_DENIED = 400   # ZAP's "denied"; 300 and 500 are a ZAP handler's temporary and internal failures


class HandshakeWatch:
    """A monitor of one DEALER's CURVE handshakes. On the master's ROUTER, ZAP denies rejected and revoked keys
    only (a pending or unknown key is let in to be told `pending`), so a denial there means the key was cut off."""

    def __init__(self, dealer: zmq.Socket) -> None:
        self.dealer = dealer
        self.monitor = dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)

    def refused(self) -> bool:
        """Read the monitor's events; whether one says ZAP denied this key."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return False
            status = int(event["value"])
            if status == ZAP_DENIED:
                return True
            logger.warning("the master could not check this worker's key (ZAP status %d); trying again", status)

    def close(self) -> None:
        """Before the DEALER is closed (a monitor outliving its socket would never be told to stop)."""
        try:
            self.dealer.disable_monitor()
        except zmq.ZMQError:   # the socket is already closing: its monitor ends with it
            pass
        self.monitor.close(0)


def refused_at_handshake(public_key: str) -> str:
    """What the worker says when ZAP denied its key: it cannot tell revoked from rejected, the operator can."""
    return (f"the master refused this worker's key {public_key} at the CURVE handshake: an operator revoked or "
            f"rejected it; `python main.py keys list` on the master says which: a rejected key can be accepted there "
            f"(python main.py keys accept KEY), a revoked one never again (python main.py keys generate --role "
            f"worker --name NEW on this machine, key_file NEW.key_secret, and accept NEW.key on the master)")


def told_by_master(message: str) -> str:
    """What the worker says when the master answered `E revoked` (the master's text says which and what to do)."""
    return f"the master cut this worker's key off: {printable(message, 1000)}"
