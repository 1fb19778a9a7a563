"""splitmesh_client: talk to a splitmesh mesh from Python.

    from splitmesh_client import generate
    for piece in generate("ipc:///tmp/splitmesh-0/device.ipc", "Hello", stream=True):
        print(piece.text, end="", flush=True)

The mesh speaks Majordomo (MDP/0.2) through its device broker, with
MessagePack bodies (docs/wire-protocol.md); this package is that protocol
and the `generate` request, nothing more (pyzmq and msgpack).
"""
from .mdp import MdpClient, MdpError, PARTIAL, FINAL
from .generate import generate, GenerateError, Piece, Result

__all__ = ["MdpClient", "MdpError", "PARTIAL", "FINAL", "generate", "GenerateError", "Piece",
           "Result"]
