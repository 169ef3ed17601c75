#!/usr/bin/env python3
"""Drives `cellm serve` with the official `openai` client (run by app/tests/serve_openai.rs).

usage: openai_client.py BASE_URL API_KEY IMAGE.png AUDIO.wav
Exits non-zero with a message on the first failed check; prints one line per check.
"""
import base64
import json
import sys
import threading
import time

import urllib.error
import urllib.request

import openai

BASE, KEY, IMAGE, AUDIO = sys.argv[1:5]
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=120)


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def expect_status(fn, status, what):
    try:
        fn()
    except openai.APIStatusError as e:
        body = e.response.json()
        err = body.get("error", {})
        check(e.status_code == status and isinstance(err.get("message"), str)
              and "type" in err and "param" in err and "code" in err,
              f"{what}: HTTP {e.status_code} with an OpenAI error body ({err.get('message')!r})")
        return err
    raise SystemExit(f"FAILED: {what}: no error")


# /v1/models
models = client.models.list()
ids = [m.id for m in models.data]
check(len(ids) == 1, f"/v1/models lists one model {ids}")
MODEL = ids[0]

# Wrong key.
bad = openai.OpenAI(base_url=BASE, api_key="wrong", max_retries=0)
expect_status(lambda: bad.models.list(), 401, "wrong API key")

HELLO = [{"role": "user", "content": "Hello, who are you?"}]

# Non-streamed chat (greedy: the reference for the streamed one).
r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
text = r.choices[0].message.content
check(isinstance(text, str) and r.choices[0].message.role == "assistant", f"chat reply {text!r}")
check(r.choices[0].finish_reason in ("stop", "length"), f"finish_reason {r.choices[0].finish_reason}")
u = r.usage
check(u.prompt_tokens > 0 and 0 < u.completion_tokens <= 12
      and u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage {u}")

# Streamed chat, with usage: same text.
chunks = list(client.chat.completions.create(
    model=MODEL, messages=HELLO, max_tokens=12, temperature=0, stream=True,
    stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
usage = [c.usage for c in chunks if c.usage]
check(streamed == text, f"streamed chat equals the non-streamed one ({len(chunks)} chunks)")
check(finish == [r.choices[0].finish_reason], f"one finish_reason in the stream {finish}")
check(len(usage) == 1 and usage[0].prompt_tokens == u.prompt_tokens, "usage chunk at the end")

# A second turn: the server reuses the first turn's KV prefix (the Rust side checks its log).
turn2 = HELLO + [{"role": "assistant", "content": text}, {"role": "user", "content": "And then?"}]
r2 = client.chat.completions.create(model=MODEL, messages=turn2, max_tokens=4, temperature=0)
check(r2.usage.prompt_tokens > u.prompt_tokens, "second turn answered")

# Sampling parameters: a seed makes a sampled reply repeatable.
kw = dict(model=MODEL, messages=HELLO, max_tokens=8, temperature=0.9, top_p=0.9, seed=7)
a = client.chat.completions.create(**kw).choices[0].message.content
b = client.chat.completions.create(**kw).choices[0].message.content
check(a == b, "same seed, same sampled reply")

# Completions, streamed and not.
c = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=0)
ctext = c.choices[0].text
check(isinstance(ctext, str) and c.usage.completion_tokens > 0, f"completion {ctext!r}")
cs = "".join(x.choices[0].text for x in client.completions.create(
    model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=0, stream=True) if x.choices)
check(cs == ctext, "streamed completion equals the non-streamed one")

# Stop sequences (string and list), cut before the stop text, streamed and not.
long = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=24, temperature=0)
full = long.choices[0].text
check(len(full) >= 6, f"a long enough completion to cut: {full!r}")
k = len(full) // 2
stop = full[k:k + 2]
expected = full[:full.find(stop)]
s1 = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=24,
                               temperature=0, stop=stop)
check(s1.choices[0].text == expected and s1.choices[0].finish_reason == "stop",
      f"stop={stop!r} cuts to {expected!r}")
s2 = "".join(x.choices[0].text for x in client.completions.create(
    model=MODEL, prompt="Once upon a time", max_tokens=24, temperature=0,
    stop=["\u0000never", stop], stream=True) if x.choices)
check(s2 == expected, "stop list, streamed")
chat_full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24,
                                           temperature=0).choices[0].message.content
if len(chat_full) >= 4:
    k = len(chat_full) // 2
    st = chat_full[k:k + 2]
    cut = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24,
                                         temperature=0, stop=[st])
    check(cut.choices[0].message.content == chat_full[:chat_full.find(st)], "chat stop sequence")

# An image (data URL) and an audio clip (base64 WAV).
img = base64.b64encode(open(IMAGE, "rb").read()).decode()
wav = base64.b64encode(open(AUDIO, "rb").read()).decode()
ri = client.chat.completions.create(model=MODEL, max_tokens=6, temperature=0, messages=[{
    "role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}}]}])
check(ri.usage.prompt_tokens > u.prompt_tokens + 10, f"image prompt has soft tokens ({ri.usage.prompt_tokens})")
ra = client.chat.completions.create(model=MODEL, max_tokens=6, temperature=0, messages=[{
    "role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        {"type": "text", "text": "Transcribe this."}]}])
check(ra.usage.prompt_tokens > u.prompt_tokens + 10, f"audio prompt has soft tokens ({ra.usage.prompt_tokens})")
rs = list(client.chat.completions.create(model=MODEL, max_tokens=6, temperature=0, stream=True, messages=[{
    "role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}},
        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        {"type": "text", "text": "Both."}]}]))
check(len(rs) >= 2, "image and audio together, streamed")

# Bad requests: OpenAI-shaped 4xx.
expect_status(lambda: client.chat.completions.create(model=MODEL, messages=[]), 400, "empty messages")
expect_status(lambda: client.chat.completions.create(model=MODEL, messages=HELLO, temperature=5), 400,
              "temperature out of range")
expect_status(lambda: client.chat.completions.create(model=MODEL, messages=[{
    "role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]),
    400, "image that is not base64")
expect_status(lambda: client.chat.completions.create(model=MODEL, messages=[{
    "role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                                   + base64.b64encode(b"not a png").decode()}}]}]),
    400, "image bytes that are no image")
expect_status(lambda: client.chat.completions.create(model=MODEL, messages=[{
    "role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]),
    400, "remote image URL")
expect_status(lambda: client.chat.completions.create(model=MODEL, messages=[{
    "role": "user", "content": [{"type": "input_audio", "input_audio": {"data": wav, "format": "mp3"}}]}]),
    400, "audio that is not WAV")
expect_status(lambda: client.chat.completions.create(model=MODEL, messages=[{"role": "tool", "content": "x"}]),
              400, "unknown role")
expect_status(lambda: client.completions.create(model=MODEL, prompt="hello world " * 2000, max_tokens=4), 400,
              "prompt longer than the context")
expect_status(lambda: client.models.retrieve("no-such-model"), 404, "unknown model id")


def raw(method, path, body=None):
    """(status, JSON body) of a plain HTTP request, for what the openai client cannot send."""
    req = urllib.request.Request(f"{BASE}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {KEY}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


status, body = raw("POST", "/chat/completions", b"{not json")
check(status == 400 and "message" in body["error"], "invalid JSON body is a 400")
status, body = raw("GET", "/nothing/here")
check(status == 404 and "message" in body["error"], "unknown URL is a JSON 404")
big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (1024 * 1024 + 200_000)}]})
status, body = raw("POST", "/chat/completions", big.encode())
check(status == 413 and body["error"]["code"] == "request_too_large", "a body over --max-body-mb is a 413")

# A client that disconnects mid-stream: the server cancels that generation (the Rust side checks
# the log) and serves the next request.
stream = client.completions.create(model=MODEL, prompt="Tell a very long story.", max_tokens=100000,
                                   temperature=1.0, seed=3, stream=True)
got = 0
for _ in stream:
    got += 1
    if got == 3:
        break
stream.close()
t = time.time()
after = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3, temperature=0)
check(after.choices[0].finish_reason in ("stop", "length"),
      f"served the next request {time.time() - t:.2f} s after a disconnect")

# Two concurrent clients, each getting exactly its own (greedy) reply.
prompts = ["The capital of France", "Numbers: one, two"]
want = [client.completions.create(model=MODEL, prompt=p, max_tokens=16, temperature=0).choices[0].text
        for p in prompts]
got = [None, None]
errors = []


def worker(i):
    try:
        c2 = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=120)
        got[i] = "".join(x.choices[0].text for x in c2.completions.create(
            model=MODEL, prompt=prompts[i], max_tokens=16, temperature=0, stream=True) if x.choices)
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
for th in threads:
    th.start()
for th in threads:
    th.join()
check(not errors and got == want, f"two concurrent clients {errors}")
print("ALL OK")
