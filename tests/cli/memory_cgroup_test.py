#!/usr/bin/env python3
"""`dsv4` inside a memory cgroup smaller than its checkpoint (issue 16).

A container's memory is its cgroup's limit, not the machine's free memory: a checkpoint that
the machine could hold but the cgroup cannot must not be copied into memory (the kernel's OOM
killer ends the process, exit 137). The test puts the binary in a fresh cgroup (v1
memory.limit_in_bytes or v2 memory.max) and runs `run`, `bench` and `chat` on a synthetic
checkpoint larger than the limit; each must finish (exit 0), streaming the routed experts
through an expert cache (issue 16), and `run` must print the same greedy answer as outside the
cgroup, with the default cache budget and with a given one.

Creating a cgroup needs root and a memory controller. Where either is missing the test exits
77 (ctest: skipped) saying so; as root with a memory controller mounted, failing to create the
cgroup is a failure, not a skip.

usage: memory_cgroup_test.py DSV4_BINARY"""
import os
import shutil
import subprocess
import sys
import tempfile

DSV4 = sys.argv[1]
LIMIT = 400 << 20  # bytes; the checkpoint below is ~540 MB (1536 experts of the tiny preset)
V1 = "/sys/fs/cgroup/memory"
V2 = "/sys/fs/cgroup"


def skip(why):
    print("SKIP:", why, flush=True)
    sys.exit(77)


def make_cgroup():
    """A fresh memory cgroup limited to LIMIT; returns (path, procs file)."""
    name = f"dsv4-test-{os.getpid()}"
    if os.path.isfile(os.path.join(V1, "memory.limit_in_bytes")):
        path = os.path.join(V1, name)
        os.mkdir(path)
        with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(LIMIT))
        return path
    controllers = os.path.join(V2, "cgroup.controllers")
    if os.path.isfile(controllers) and "memory" in open(controllers).read().split():
        path = os.path.join(V2, name)
        os.mkdir(path)
        with open(os.path.join(path, "memory.max"), "w") as f:
            f.write(str(LIMIT))
        swap = os.path.join(path, "memory.swap.max")
        if os.path.exists(swap):
            with open(swap, "w") as f:
                f.write("0")
        return path
    skip("no cgroup memory controller is mounted (neither v1 /sys/fs/cgroup/memory nor v2 with 'memory')")


def run_in(cgroup, args, stdin=None):
    """Runs dsv4 ARGS as a process of `cgroup` (it joins before exec)."""
    procs = os.path.join(cgroup, "cgroup.procs") if cgroup else None

    def join():
        if procs:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

    return subprocess.run([DSV4, *args], input=stdin, capture_output=True, timeout=300, preexec_fn=join)


def main():
    if os.geteuid() != 0:
        skip("creating a memory cgroup needs root")
    tmp = tempfile.mkdtemp(prefix="dsv4_cgroup_")
    cgroup = None
    failures = []
    try:
        model = os.path.join(tmp, "model")
        p = subprocess.run([DSV4, "make-model", "--preset", "tiny", "--experts", "1536", "--out", model],
                           capture_output=True, timeout=300)
        assert p.returncode == 0, p.stderr.decode()
        size = sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model) if f.endswith(".safetensors"))
        assert size > LIMIT * 1.2, f"the checkpoint ({size} B) must be larger than the cgroup limit ({LIMIT} B)"
        cgroup = make_cgroup()

        prompt = ["run", "--model", model, "-p", "Hello there", "-n", "8", "--temp", "0"]
        outside = run_in(None, prompt)
        assert outside.returncode == 0, outside.stderr.decode()
        cases = [
            ("run", prompt, None),
            ("run --expert-cache-gb", prompt + ["--expert-cache-gb", "0.01"], None),
            ("bench", ["bench", "--model", model, "--prompt", "8", "--gen", "4", "--reps", "1", "--threads", "1"], None),
            ("chat", ["chat", "--model", model, "-n", "4", "--temp", "0"], b"Hi\n/exit\n"),
        ]
        for what, args, stdin in cases:
            p = run_in(cgroup, args, stdin)
            err = p.stderr.decode(errors="replace")
            if p.returncode != 0:
                failures.append(f"{what} in a {LIMIT >> 20} MB cgroup: exit {p.returncode}\n{err[-2000:]}")
            elif "--expert-cache-gb" not in args and "stream from disk through a" not in err:
                failures.append(f"{what}: the routed experts were not streamed:\n{err}")
            elif what.startswith("run") and p.stdout != outside.stdout:
                failures.append(f"run: answer in the cgroup {p.stdout!r} differs from outside {outside.stdout!r}")
            else:
                print(f"ok: {what} in a {LIMIT >> 20} MB cgroup", flush=True)
    finally:
        if cgroup:
            os.rmdir(cgroup)
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAIL:", f, flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
