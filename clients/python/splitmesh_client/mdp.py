"""mdp.py: the client side of Majordomo MDP/0.2 (RFC 18) over a DEALER socket.

A request is [b"MDPC02", 0x01, service, body...]; the broker answers with
zero or more [b"MDPC02", 0x02 PARTIAL, service, body...] and one
[b"MDPC02", 0x03 FINAL, service, body...]. Errors of the broker (no such
service, no worker before the expiry) come as a FINAL whose MessagePack
body has a `status` of 4xx/5xx.
"""
import zmq

MDPC_CLIENT = b"MDPC02"
REQUEST, PARTIAL, FINAL = b"\x01", b"\x02", b"\x03"


class MdpError(Exception):
    """The broker did not answer, or answered with something that is not MDP."""


class MdpClient:
    """One DEALER socket to a broker. Not thread-safe: one per thread."""

    def __init__(self, endpoint, context=None):
        self.endpoint = endpoint
        self.context = context or zmq.Context.instance()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, service, *body):
        """Sends a REQUEST for `service` with the given body frames (bytes)."""
        self.sock.send_multipart([MDPC_CLIENT, REQUEST, service.encode()] + [bytes(b) for b in body])

    def recv(self, timeout_ms):
        """Waits for one reply: returns (command, service, body_frames);
        raises MdpError on timeout or on a malformed message."""
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            raise MdpError("no reply from the broker at %s within %d ms" % (self.endpoint, timeout_ms))
        frames = self.sock.recv_multipart()
        if len(frames) < 3 or frames[0] != MDPC_CLIENT or frames[1] not in (PARTIAL, FINAL):
            raise MdpError("malformed reply from the broker: %r" % frames[:3])
        return frames[1], frames[2].decode(errors="replace"), frames[3:]

    def request(self, service, *body, timeout_ms=5000):
        """Sends a request and yields (command, body_frames) until the FINAL."""
        self.send(service, *body)
        while True:
            command, name, frames = self.recv(timeout_ms)
            if name != service:
                continue        # a late reply to an earlier request
            yield command, frames
            if command == FINAL:
                return
