#!/usr/bin/env python3
"""End-to-end test of `dsv4 chat` on the synthetic model, driven through stdin like a person:
two turns, then a long answer interrupted with Ctrl-C (SIGINT), then a third turn and /exit.
Checks the transcript: every turn answered, the interrupt reported, the process exits 0."""
import os
import select
import signal
import subprocess
import sys
import time

dsv4 = sys.argv[1]
# The synthetic model and the tokenizer base live in the user's dsv4 cache (scripts/setup.sh fills it).
env = dict(os.environ)
p = subprocess.Popen([dsv4, "chat", "--model", "synthetic", "-n", "300", "--ctx", "4096"], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
out, err = b"", b""


def pump(done, timeout: float, what: str) -> None:
    """Collects stdout/stderr until done() holds; fails the test on timeout or early exit."""
    global out, err
    deadline = time.time() + timeout
    while not done():
        if time.time() > deadline or p.poll() is not None:
            sys.exit(f"timeout or exit waiting for {what}\nstdout:\n{out.decode(errors='replace')}\n"
                     f"stderr:\n{err.decode(errors='replace')}")
        r, _, _ = select.select([p.stdout, p.stderr], [], [], 0.1)
        for f in r:
            chunk = os.read(f.fileno(), 65536)
            if f is p.stdout:
                out += chunk
            else:
                err += chunk


def read_until(marker: bytes, timeout: float) -> None:
    """Waits until `marker` has appeared once more in stderr (a turn's stats line)."""
    start = err.count(marker)
    pump(lambda: err.count(marker) > start, timeout, repr(marker))


def send(line: str) -> None:
    p.stdin.write((line + "\n").encode())
    p.stdin.flush()


send("Hello there")
read_until(b"[prompt ", 600)  # the first call may create the synthetic model
send("And a second question?")
read_until(b"[prompt ", 300)
# A long answer, interrupted once it has started streaming (a few bytes past the "> " prompt).
send("/think off")
pump(lambda: b"(thinking off)" in out, 60, "the /think reply")
before = out.rindex(b"(thinking off)") + len(b"(thinking off)\n> ")
send("Tell me a long story")
pump(lambda: len(out) >= before + 8, 300, "the third answer")
p.send_signal(signal.SIGINT)
read_until(b"[prompt ", 300)
send("/exit")
rest_out, rest_err = p.communicate(timeout=60)
out += rest_out
err += rest_err
text = out.decode(errors="replace")
log = err.decode(errors="replace")
ok = True
if p.returncode != 0:
    print(f"exit code {p.returncode}"); ok = False
if log.count("[prompt ") != 3:
    print("expected three answered turns"); ok = False
if "(interrupted)" not in text:
    print("the interrupt was not reported"); ok = False
# Turn 2 must reuse turn 1's state: its prompt is only the new message, far shorter than both.
turns = [int(s.split(" tokens")[0]) for s in log.split("[prompt ")[1:]]
if not (len(turns) == 3 and turns[1] < 40):
    print(f"second turn re-prefilled the history: prompt tokens {turns}"); ok = False
print(text)
print(log)
print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
sys.exit(0 if ok else 1)
