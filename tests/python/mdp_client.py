#!/usr/bin/env python3
"""mdp_client.py: an MDP/0.2 (RFC 18) client in Python, with pyzmq and msgpack.

Shows that any Majordomo client in any language can call a splitmesh
service: it speaks MDPC02 on a DEALER socket and MessagePack bodies, and
shares no code with the C side.

Library use:
    client = MdpClient("tcp://127.0.0.1:5555")
    command, body_frames = client.request("echo", msgpack.packb({"v": 1}))

Command line:
    mdp_client.py ENDPOINT SERVICE [JSON_BODY]      one request, prints reply
    mdp_client.py --selftest ENDPOINT SERVICE       the checks the ctest runs
"""
import json
import sys
import time

import msgpack
import zmq

MDPC_CLIENT = b"MDPC02"
REQUEST, PARTIAL, FINAL = b"\x01", b"\x02", b"\x03"


class MdpError(Exception):
    pass


class MdpClient:
    """A DEALER-socket MDP/0.2 client with Lazy Pirate retries."""

    def __init__(self, endpoint, timeout_ms=2500, retries=2):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.ctx = zmq.Context.instance()
        self.sock = None
        self._connect()

    def _connect(self):
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(self.endpoint)

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def send(self, service, *body):
        frames = [MDPC_CLIENT, REQUEST, service.encode()] + [bytes(b) for b in body]
        self.sock.send_multipart(frames)

    def recv(self, timeout_ms):
        """Returns (command, service, body_frames) or None on timeout."""
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        frames = self.sock.recv_multipart()
        if len(frames) < 3 or frames[0] != MDPC_CLIENT or frames[1] not in (PARTIAL, FINAL):
            raise MdpError("malformed reply from broker: %r" % frames[:3])
        return frames[1], frames[2].decode(), frames[3:]

    def request(self, service, *body, partials=None):
        """Sends a request, waits for FINAL; PARTIAL bodies go to `partials`."""
        for attempt in range(self.retries + 1):
            if attempt:
                self._connect()
            self.send(service, *body)
            while True:
                reply = self.recv(self.timeout_ms)
                if reply is None:
                    break
                command, name, frames = reply
                if name != service:
                    continue
                if command == PARTIAL:
                    if partials is not None:
                        partials.append(frames)
                    continue
                return frames
        raise MdpError("no reply from %r after %d attempts" % (service, self.retries + 1))


def _check(condition, message):
    if not condition:
        raise MdpError("selftest failed: " + message)


def selftest(endpoint, service):
    """Checks echo, partials, sessions, MMI, malformed bodies and expiry."""
    client = MdpClient(endpoint, timeout_ms=3000, retries=0)
    try:
        # MMI: the service is there, an unknown one is not.
        _check(client.request("mmi.service", service.encode()) == [b"200"], "mmi.service 200")
        _check(client.request("mmi.service", b"no-such") == [b"404"], "mmi.service 404")
        _check(client.request("mmi.nope", b"x") == [b"501"], "mmi unknown 501")

        # A MessagePack request comes back echoed by a named worker.
        body = msgpack.packb({"v": 1, "text": "hello from python"})
        reply = msgpack.unpackb(client.request(service, body)[0])
        _check(reply["status"] == 200, "echo status")
        _check(reply["echo"] == body, "echo body round-trips")
        worker = reply["worker"]
        _check(isinstance(worker, str) and worker, "worker name")

        # Streaming: three PARTIALs, then the FINAL.
        parts = []
        final = client.request(service, msgpack.packb({"v": 1, "partials": 3}), partials=parts)
        _check(len(parts) == 3, "three partials, got %d" % len(parts))
        _check([msgpack.unpackb(p[0])["part"] for p in parts] == [0, 1, 2], "partial order")
        _check(msgpack.unpackb(final[0])["status"] == 200, "final after partials")

        # Session affinity: the same session always lands on one worker.
        seen = set()
        for _ in range(50):
            r = client.request(service, msgpack.packb({"v": 1, "session": "py-session"}))
            seen.add(msgpack.unpackb(r[0])["worker"])
        _check(len(seen) == 1, "session pinned to one worker, saw %r" % seen)

        # Malformed bodies get a 400 error reply, and the broker keeps serving.
        bad = [
            b"\x81\xa1v",                            # truncated map
            msgpack.packb({"v": 99}),                # unknown schema version
            msgpack.packb({"v": 1, "session": 7}),   # wrong type
            b"\xdf\xff\xff\xff\xff",                 # oversized map length
            b"\x81\xa1x" + b"\x91" * 100 + b"\x00",  # deep nesting
        ]
        for frame in bad:
            err = msgpack.unpackb(client.request(service, frame)[0])
            _check(err["v"] == 1 and err["status"] == 400, "400 for %r: %r" % (frame[:8], err))
            _check("error" in err and err["error"], "error text")
        reply = msgpack.unpackb(client.request(service, msgpack.packb({"v": 1}))[0])
        _check(reply["status"] == 200, "still serving after malformed bodies")

        # A garbage MDP header is dropped; the same socket still works.
        client.sock.send_multipart([b"GARBAGE", b"\x01", b"x"])
        _check(client.recv(200) is None, "garbage header gets no reply")
        _check(client.request("mmi.service", service.encode()) == [b"200"], "alive after garbage")

        # Unknown service: waits, then expires with a 504.
        start = time.monotonic()
        err = msgpack.unpackb(client.request("python-nobody", msgpack.packb({"v": 1}))[0])
        waited = time.monotonic() - start
        _check(err["status"] == 504, "504 for unknown service: %r" % err)
        _check(waited >= 0.2, "request waited before expiring (%.3f s)" % waited)
    finally:
        client.close()
    print("mdp_client.py selftest: ok (worker %s)" % worker)
    return 0


def main(argv):
    if len(argv) >= 4 and argv[1] == "--selftest":
        return selftest(argv[2], argv[3])
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    body = msgpack.packb(json.loads(argv[3])) if len(argv) > 3 else msgpack.packb({"v": 1})
    client = MdpClient(argv[1])
    try:
        frames = client.request(argv[2], body)
    finally:
        client.close()
    for frame in frames:
        try:
            print(json.dumps(msgpack.unpackb(frame), default=repr))
        except Exception:
            print(repr(frame))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except MdpError as exc:
        print("mdp_client.py: %s" % exc, file=sys.stderr)
        sys.exit(1)
