"""generate.py: the mesh's `generate` request (schemas/messages.toml)."""
from dataclasses import dataclass, field

import msgpack

from .mdp import FINAL, PARTIAL, MdpClient

SCHEMA_VERSION = 1


class GenerateError(Exception):
    """The mesh answered with an error: `status` is HTTP-like (404, 422, 503...)."""

    def __init__(self, status, message):
        super().__init__("%d: %s" % (status, message))
        self.status = status
        self.message = message


@dataclass
class Piece:
    """Text accepted since the previous piece (one PARTIAL, or the FINAL's rest)."""
    text: str
    tokens: list


@dataclass
class Result:
    """The whole generation."""
    text: str
    tokens: list
    finish_reason: str
    stats: dict = field(default_factory=dict)


def _request(prompt, messages, max_tokens, temperature, top_p, top_k, seed, stop, model, stream):
    body = {"v": SCHEMA_VERSION, "t": "generate", "max_tokens": int(max_tokens),
            "temperature": float(temperature), "stream": bool(stream)}
    if messages is not None:
        body["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    else:
        body["prompt"] = prompt
    if top_p is not None:
        body["top_p"] = float(top_p)
    if top_k is not None:
        body["top_k"] = int(top_k)
    if seed is not None:
        body["seed"] = int(seed)
    if stop:
        body["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if model:
        body["model"] = model
    return msgpack.packb(body, use_bin_type=True)


def _decode(frames):
    if not frames:
        raise GenerateError(502, "empty reply from the mesh")
    reply = msgpack.unpackb(frames[0], raw=False)
    if not isinstance(reply, dict):
        raise GenerateError(502, "reply is not a MessagePack map")
    if reply.get("status", 200) >= 400 or reply.get("t") == "error":
        raise GenerateError(int(reply.get("status", 500)), str(reply.get("error", "error")))
    return reply


def _stream(client, body, timeout_ms):
    try:
        for command, frames in client.request("generate", body, timeout_ms=timeout_ms):
            reply = _decode(frames)
            if command == PARTIAL:
                yield Piece(reply.get("text", ""), list(reply.get("tokens", [])))
            else:
                if reply.get("finish_reason") == "error":
                    raise GenerateError(500, "generation ended with an error in the mesh")
                yield Result(reply.get("text", ""), list(reply.get("tokens", [])),
                             reply.get("finish_reason", "stop"), reply.get("stats", {}))
    finally:
        client.close()


def generate(endpoint, prompt=None, *, messages=None, max_tokens=256, temperature=0.0,
             top_p=None, top_k=None, seed=None, stop=None, model=None, stream=False,
             timeout_ms=60000):
    """Generates text through the mesh whose device broker is `endpoint`.

    Give `prompt` (raw text) or `messages` (a chat: [{"role", "content"}]).
    Without `stream`: returns a Result with all the text. With `stream`:
    returns an iterator of Piece as text is accepted; the last item is the
    Result of the FINAL (its text is only what no Piece carried).
    Raises GenerateError when the mesh refuses the request and MdpError
    when the broker does not answer within timeout_ms (per reply).
    """
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt and messages")
    body = _request(prompt, messages, max_tokens, temperature, top_p, top_k, seed, stop, model, stream)
    client = MdpClient(endpoint)
    items = _stream(client, body, timeout_ms)
    if stream:
        return items
    text, tokens, last = [], [], None
    for item in items:
        text.append(item.text)
        tokens.extend(item.tokens)
        last = item
    return Result("".join(text), tokens, last.finish_reason, last.stats)
