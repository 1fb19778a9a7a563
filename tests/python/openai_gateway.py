#!/usr/bin/env python3
"""openai_gateway.py: drives splitmesh-gateway with the official `openai` package.

    openai_gateway.py BASE_URL PROMPT MAX_TOKENS

Prints one JSON object for tests/test_openai.c to check:
  stream_text, stream_finish, stream_chunks   a streamed chat completion (temperature 0)
  text, finish, usage                         the same request without streaming
  completion_text, completion_finish          /v1/completions with the raw prompt
  models                                      ids from /v1/models
  errors                                      {case: [http status, error.type, error.param, error.code]}
  after_errors_text                           a streamed chat after the bad requests
Exit status 0 unless the package itself fails in an unexpected way.
"""
import json
import sys
import urllib.error
import urllib.request

import openai


def raw(base, method, path, body):
    """Status and parsed JSON body of one plain HTTP request."""
    req = urllib.request.Request(base.rstrip("/").rsplit("/v1", 1)[0] + path, data=body, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def shape(status, body):
    err = body.get("error", {}) if isinstance(body, dict) else {}
    return [status, err.get("type"), err.get("param"), err.get("code"), isinstance(err.get("message"), str)]


def main():
    base, prompt, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": prompt}]
    out = {}

    def stream_chat():
        pieces, finish, chunks = [], None, 0
        stream = client.chat.completions.create(model="splitmesh", messages=messages, temperature=0,
                                                max_tokens=max_tokens, stream=True)
        for chunk in stream:
            chunks += 1
            choice = chunk.choices[0]
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
        return "".join(pieces), finish, chunks

    out["stream_text"], out["stream_finish"], out["stream_chunks"] = stream_chat()

    whole = client.chat.completions.create(model="splitmesh", messages=messages, temperature=0,
                                           max_tokens=max_tokens)
    out["text"] = whole.choices[0].message.content
    out["finish"] = whole.choices[0].finish_reason
    out["usage"] = whole.usage.model_dump()
    out["object"] = whole.object

    comp = client.completions.create(model="splitmesh", prompt=prompt, temperature=0, max_tokens=8)
    out["completion_text"] = comp.choices[0].text
    out["completion_finish"] = comp.choices[0].finish_reason

    out["models"] = [m.id for m in client.models.list()]

    errors = {}
    cases = {
        "n": dict(n=2),
        "logprobs": dict(logprobs=True),
        "tools": dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        "model": dict(model="no-such-model"),
        "temperature": dict(temperature=5),
        "max_tokens": dict(max_tokens=100000),
    }
    for name, extra in cases.items():
        kwargs = dict(model="splitmesh", messages=messages, max_tokens=4)
        kwargs.update(extra)
        try:
            client.chat.completions.create(**kwargs)
            errors[name] = ["accepted"]
        except openai.APIStatusError as e:
            errors[name] = shape(e.status_code, e.body and {"error": e.body} or {})
    errors["json"] = shape(*raw(base, "POST", "/v1/chat/completions", b"{not json"))
    errors["messages"] = shape(*raw(base, "POST", "/v1/chat/completions", b'{"messages": []}'))
    errors["path"] = shape(*raw(base, "GET", "/v1/nothing", None))
    errors["method"] = shape(*raw(base, "GET", "/v1/chat/completions", None))
    out["errors"] = errors

    out["after_errors_text"] = stream_chat()[0]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
