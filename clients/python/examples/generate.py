#!/usr/bin/env python3
"""generate.py: stream a completion from a splitmesh mesh with splitmesh_client.

    PYTHONPATH=clients/python python3 clients/python/examples/generate.py \
        --broker ipc:///tmp/splitmesh-0/device.ipc --chat -n 32 "Hello, who are you?"

Prints the text as it arrives; with --json prints one JSON object at the
end instead ({"text", "tokens", "finish_reason", "stats"}), the same keys
`splitmesh generate --json` prints.
"""
import argparse
import json
import sys

from splitmesh_client import GenerateError, MdpError, Result, generate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prompt")
    ap.add_argument("--broker", required=True, help="the device broker endpoint")
    ap.add_argument("--chat", action="store_true", help="send the prompt as one user message")
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    kwargs = dict(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
                  stream=True)
    if args.chat:
        kwargs["messages"] = [{"role": "user", "content": args.prompt}]
    else:
        kwargs["prompt"] = args.prompt
    text, tokens = [], []
    try:
        for item in generate(args.broker, **kwargs):
            text.append(item.text)
            tokens.extend(item.tokens)
            if not args.json:
                sys.stdout.write(item.text)
                sys.stdout.flush()
            if isinstance(item, Result):
                final = item
    except (GenerateError, MdpError) as e:
        print("generate.py: %s" % e, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"text": "".join(text), "tokens": tokens,
                          "finish_reason": final.finish_reason, "stats": final.stats}))
    else:
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
