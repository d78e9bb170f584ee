"""Why the master did not answer: one probe connection, watched by a socket monitor, tells a port where nothing
listens from a master that refuses this client's security (CURVE on one side only, another master's key, a
refused key). Used only after a request timed out, so the requests themselves carry no monitor.

When CURVE is on at one side only, both sides see the mechanism mismatch at once and the master closes the
connection; the client's monitor reports it as such only if it read the master's greeting before the close
reset the connection, so a failed handshake is followed by a read of the greeting itself (`announced_mechanism`)."""
from __future__ import annotations

import itertools
import re
import socket
import time
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from .transport import Curve, connect, make_socket

PROBE_S = 1.0   # on loopback or a LAN a handshake takes milliseconds; a second is ample and bounds the wait
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_HANDSHAKE_SUCCEEDED | _FAILED
_probes = itertools.count()
CURVE_STEPS = "README, Security, step 4"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What the probe saw: `reason` completes "the master at URL did not answer within Ns: ...", `hint` says what
    to do; `command`, the zmqgrid command (without the program) that starts or shows what is wrong on the master's
    machine, for the command line to name (cli.hints)."""
    reason: str
    hint: str
    command: str = ""


def probe(ctx: zmq.Context, url: str, curve: Curve | None, wait_s: float = PROBE_S) -> Diagnosis:
    """Connect once more to `url` with the client's own security, send nothing, and name what happened."""
    sock = make_socket(ctx, zmq.DEALER, curve=curve)
    endpoint = f"inproc://zmqgrid.probe-{next(_probes)}-{id(sock)}"
    sock.monitor(endpoint, _EVENTS)
    # Unbounded receive queue: libzmq's I/O thread blocks on a full monitor pipe (a refused port retries every 0.1 s).
    monitor = make_socket(ctx, zmq.PAIR, rcvhwm=0)
    monitor.connect(endpoint)
    try:
        connect(sock, url)
        return _watch(monitor, url, curve is not None, time.monotonic() + wait_s)
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def _watch(monitor: zmq.Socket, url: str, curved: bool, deadline: float) -> Diagnosis:
    connected = False
    while (left := deadline - time.monotonic()) > 0 and monitor.poll(int(left * 1000) + 1):
        event = parse_monitor_message(monitor.recv_multipart())
        kind, value = event["event"], event["value"]
        if kind == zmq.EVENT_CONNECTED:
            connected = True
        elif kind == zmq.EVENT_CONNECT_RETRIED and not connected:
            return Diagnosis("nothing accepts connections there (connection refused)", "start it or check --master",
                             "distribute --mode master")
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return Diagnosis("it accepted the connection and its handshake, so it is up but busy, or not a "
                             "zmqgrid master", "try again with a longer --timeout, or check --master")
        elif kind & _FAILED:
            return _failed(kind, value, curved, url)
    if connected:
        return Diagnosis("it accepted the TCP connection but never completed the ZMTP handshake (a stopped "
                         "process, or not a zmqgrid master)", "check the master's process and --master")
    return Diagnosis("no TCP connection was made", "check --master, the network and firewalls, and that it runs")


def _failed(kind: int, value: int, curved: bool, url: str) -> Diagnosis:
    mismatch = kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
    if not mismatch and kind != zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        announced = announced_mechanism(url)
        mismatch = announced is not None and announced != ("CURVE" if curved else "NULL")
    if mismatch:
        if not curved:
            return Diagnosis("it requires CURVE, and this client has it off (the handshake failed: security "
                             "mechanism mismatch)",
                             "set ZMQGRID_CURVE=true (or curve: true in the config; --curve for distribute) with "
                             "this machine's client key and the master's public master.key in keys/ "
                             f"({CURVE_STEPS})")
        return Diagnosis("it runs without CURVE, and this client has it on (the handshake failed: security "
                         "mechanism mismatch)", "turn curve off for this client (ZMQGRID_CURVE, curve in the "
                         "config), or start the master with --curve")
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return Diagnosis(f"it refused this client's key (ZAP status {value})",
                         f"the key is rejected or revoked there; generate a new one and have it accepted "
                         f"({CURVE_STEPS})", "keys list")
    if curved:
        return Diagnosis("the CURVE handshake failed: the master's public key this client holds (master_key, "
                         "default keys/master.key) is not this master's",
                         "copy master.key again from the keys/ folder on the master's machine")
    return Diagnosis(f"the ZMTP handshake failed ({zmq.Event(kind).name} {value})", "check --master")


def announced_mechanism(url: str, wait_s: float = PROBE_S) -> str | None:
    """The security mechanism ("CURVE", "NULL"...) the ZMTP peer at a tcp:// URL names in its greeting; None when
    it cannot be read. Sending a ZMTP 3 signature makes the peer send the rest of its greeting (RFC 23)."""
    found = re.fullmatch(r"tcp://\[?([^\]]+?)\]?:(\d+)", url)
    if found is None:
        return None
    greeting = b""
    try:
        with socket.create_connection((found[1], int(found[2])), timeout=wait_s) as conn:
            conn.sendall(b"\xff" + bytes(8) + b"\x7f\x03")
            while len(greeting) < 32 and (chunk := conn.recv(64 - len(greeting))):
                greeting += chunk
    except OSError:
        return None
    if len(greeting) < 32 or greeting[0] != 0xFF or greeting[9] != 0x7F:
        return None
    return greeting[12:32].rstrip(b"\0").decode("ascii", "replace")
