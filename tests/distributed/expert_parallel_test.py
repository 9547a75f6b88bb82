#!/usr/bin/env python3
"""Expert parallelism over MPI through the built binary (issue 17), on one machine:
- `dsv4 logits --expert-parallel` under `mpirun -np 2` / `-np 3` writes a file byte-identical to
  the single process's (prefill in chunks, decode, MTP; both numerics) on the golden checkpoints
  and on a synthetic flash-width stack (hash and score-routed layers);
- the model API under mpirun (ep_forward_check): batched prefill, batched decode mixed with a
  chunked prefill, MTP, bit for bit;
- `dsv4 serve --expert-parallel` answers through rank 0 exactly as one process does (one request
  and two batched), and stops on SIGTERM;
- a rank killed, or stopped (hung), ends the whole job with a message within a bounded time, also
  while the server is idle (rank 0's heartbeat); ranks that loaded different checkpoints or
  numerics are refused at start.

With `sanitizer` (the ASan + UBSan build, CTest `expert_parallel_sanitizer_test`), a subset that
fits in about two minutes there — np 2 and 3 bit-identity with decode, MTP, chunks and batching,
the server, the idle failures — and every process's stderr must hold no sanitizer report.
Open MPI's own start-up allocations are left to LeakSanitizer's suppressions in
openmpi.lsan.supp beside this file (only frames inside the Open MPI libraries match).

usage: expert_parallel_test.py DSV4 EP_FORWARD_CHECK MPIEXEC SHARED_DIR [sanitizer]"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

DSV4, CHECK, MPIEXEC, SHARED = sys.argv[1:5]
SANITIZER = sys.argv[5:6] == ["sanitizer"]
GOLDEN = os.path.join(SHARED, "golden")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_mpi_yield_when_idle="1")
SUPPRESSIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openmpi.lsan.supp")
ENV["LSAN_OPTIONS"] = ":".join(filter(None, [ENV.get("LSAN_OPTIONS"), f"suppressions={SUPPRESSIONS}"]))
# Whole allocation stacks (the frame-pointer unwinder stops in Open MPI's plug-ins, which
# MPI_Finalize unloads: their frames alone cannot be named, the libmpi frames below them can).
ENV["ASAN_OPTIONS"] = ":".join(filter(None, [ENV.get("ASAN_OPTIONS"), "fast_unwind_on_malloc=0"]))
ENV["UBSAN_OPTIONS"] = ":".join(filter(None, [ENV.get("UBSAN_OPTIONS"), "halt_on_error=1:print_stacktrace=1"]))
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "Sanitizer:DEADLYSIGNAL",
                     "SUMMARY: UndefinedBehaviorSanitizer")
# One machine, possibly more ranks than cores; shared memory only, loopback for the launcher.
MPI = [MPIEXEC, "--oversubscribe", "--mca", "btl", "self,vader", "--mca", "oob_tcp_if_include", "lo"]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def no_sanitizer_report(stderr, what):
    """Sanitizer build: a report fails the test even where the process was meant to fail."""
    found = [m for m in SANITIZER_REPORTS if m in stderr] if SANITIZER else []
    if found:
        check(False, f"{what}: sanitizer report {found}: {stderr[stderr.find(found[0]):][:1500]}")


def run(argv, timeout=300, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ENV, **kw)
    no_sanitizer_report(r.stderr, " ".join(os.path.basename(a) for a in argv)[-200:])
    return r


def mpirun(np, *argv, timeout=300):
    return run(MPI + ["-np", str(np)] + list(argv), timeout=timeout)


def same_file(a, b):
    return open(a, "rb").read() == open(b, "rb").read()


def logits_case(tmp, model, name, ids, extra, runs):
    """single process vs each (np, waves) in runs: byte-identical output files."""
    single = os.path.join(tmp, "single.st")
    r = run([DSV4, "logits", "--model", model, "--ids", ids, "--out", single] + extra)
    if not check(r.returncode == 0, f"{name}: single-process logits ({r.stderr.strip()[-300:]})"):
        return
    for np, waves in runs:
        out = os.path.join(tmp, f"ep{np}.st")
        r = mpirun(np, DSV4, "logits", "--model", model, "--ids", ids, "--out", out, "--expert-parallel",
                   "--ep-waves", str(waves), *extra)
        check(r.returncode == 0 and same_file(single, out),
              f"{name}: mpirun -np {np} --ep-waves {waves} logits byte-identical ({r.stderr.strip()[-300:]})")


def test_logits(tmp):
    ids = os.path.join(tmp, "ids.json")
    json.dump({"prompt": [(i * 37 + 11) % 900 + 5 for i in range(45)], "decode": [7, 19, 300, 42]}, open(ids, "w"))
    if SANITIZER:  # np 2 and 3 with chunks, decode and MTP on one golden checkpoint
        logits_case(tmp, os.path.join(GOLDEN, "flash-mini"), "flash-mini reference", ids, ["--mtp", "--chunk", "16"],
                    [(2, 1), (3, 4)])
        return
    for case in ("flash-mini", "pro-mini"):
        model = os.path.join(GOLDEN, case)
        logits_case(tmp, model, f"{case} reference", ids, ["--mtp", "--chunk", "16"], [(2, 1), (3, 4)])
        logits_case(tmp, model, f"{case} plain", ids, ["--mtp", "--numerics", "plain"], [(2, 4)])
    # Real widths (dim 4096, FP4 experts), layers 0-1 hash-routed, layer 2 by score.
    flash = os.path.join(tmp, "flash")
    r = run([DSV4, "make-model", "--preset", "flash", "--layers", "3", "--experts", "6", "--no-tokenizer", "--out",
             flash], timeout=400)
    if check(r.returncode == 0, "make-model flash stack"):
        logits_case(tmp, flash, "flash-width 3 layers", ids, ["--mtp", "--chunk", "20"], [(2, 2), (3, 3)])
        r = mpirun(2, CHECK, flash, "2")
        check(r.returncode == 0 and " 0 differ" in r.stdout, f"flash-width batched forward np 2: {r.stdout.strip()[-300:]}")
        shutil.rmtree(flash, ignore_errors=True)


def test_batched(tmp):
    for case, np, waves in (("flash-mini", 2, 1), ("pro-mini", 3, 4)):
        r = mpirun(np, CHECK, os.path.join(GOLDEN, case), str(waves))
        check(r.returncode == 0 and " 0 differ" in r.stdout,
              f"{case} batched prefill/decode/chunk/MTP np {np}: {r.stdout.strip()[-300:]} {r.stderr.strip()[-300:]}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """`dsv4 serve` alone or under mpirun (np > 0), on a free loopback port."""

    def __init__(self, model, np=0, extra=()):
        self.port = free_port()
        argv = [DSV4, "serve", "--model", model, "--port", str(self.port), "--parallel", "2", *extra]
        if np:
            argv = MPI + ["-np", str(np)] + argv + ["--expert-parallel"]
        self.err = tempfile.TemporaryFile()
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.err, env=ENV, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline and self.p.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=2).read()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"server did not start: {self.stderr()[-500:]}")

    def complete(self, prompt, timeout=60):
        body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 12, "temperature": 0}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/completions", body,
                                     {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=timeout).read())["choices"][0]["text"]

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def ranks(self):
        """pid of each rank (children of mpirun, by OMPI_COMM_WORLD_RANK)."""
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                stat = open(f"/proc/{pid}/stat").read()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid != self.p.pid:
                    continue
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            for e in env:
                if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                    out[int(e.split(b"=")[1])] = int(pid)
        return out

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        no_sanitizer_report(self.stderr(), "serve")


def test_serve(tmp, tiny):
    prompts = ["The quick brown fox", "Expert parallelism splits"]
    alone = Server(tiny)
    try:
        want = [alone.complete(p) for p in prompts]
    finally:
        alone.close()
    ep = Server(tiny, np=2)
    try:
        check(ep.complete(prompts[0]) == want[0], "serve -np 2: one request answered through rank 0 as one process")
        got = [None, None]
        threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, ep.complete(prompts[i]))) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(got == want, f"serve -np 2: two concurrent (batched) requests as one process: {got} vs {want}")
        # SIGTERM to rank 0 (to mpirun itself, Open MPI aborts the job): the server stops, rank 0
        # releases the other rank, and the job ends cleanly.
        os.kill(ep.ranks()[0], signal.SIGTERM)
        rc = ep.wait(30)
        check(rc == 0, f"serve -np 2: SIGTERM to rank 0 stops every rank, exit {rc}: {ep.stderr()[-300:]}")
    finally:
        ep.close()


def test_failures(tmp, tiny):
    # A rank that hangs (stopped) in the middle of a request: rank 0 gives up after --ep-timeout.
    s = Server(tiny, np=2, extra=["--ep-timeout", "3"])
    try:
        ranks = s.ranks()
        if check(set(ranks) == {0, 1}, f"found both ranks: {ranks}"):
            os.kill(ranks[1], signal.SIGSTOP)
            threading.Thread(target=lambda: s.complete("hello", timeout=60), daemon=True).start()
            t0 = time.time()
            rc = s.wait(40)
            check(rc not in (None, 0) and "no answer within 3 s" in s.stderr(),
                  f"rank 1 hung: job ended in {time.time() - t0:.1f} s, exit {rc}: {s.stderr()[-400:]}")
    finally:
        s.close()
    test_mismatch(tmp, tiny)


def ended_within(s, bound, what, messages):
    """The job ends by itself within `bound` s, with a non-zero exit and one of `messages` on stderr."""
    t0 = time.time()
    rc = s.wait(bound)
    check(rc not in (None, 0) and any(m in s.stderr() for m in messages),
          f"{what}: job ended in {time.time() - t0:.1f} s (bound {bound} s), exit {rc}: {s.stderr()[-400:]}")


def test_idle_failures(tmp, tiny):
    """A server with no request in flight: rank 0's heartbeat keeps an idle job alive beyond
    --ep-timeout, and a stopped or killed rank, expert rank or rank 0, still ends the job."""
    timeout = 3  # short for the test; room for a loaded machine (the sanitizer build, ctest -j)
    # A killed rank: the launcher (or, if it is slower, the heartbeat) ends the job and says so.
    killed = ("signal 9", "stopped answering", "rank 0 died or hangs")
    for victim, sig, messages in ((1, signal.SIGSTOP, ["rank 1 stopped answering"]),
                                  (1, signal.SIGKILL, killed),
                                  (0, signal.SIGSTOP, ["rank 0 died or hangs"]),
                                  (0, signal.SIGKILL, killed)):
        if SANITIZER and (victim, sig) == (0, signal.SIGKILL):
            continue  # the launcher's doing, as (1, SIGKILL): not worth the sanitizer build's time
        s = Server(tiny, np=2, extra=["--ep-timeout", str(timeout)])
        try:
            ranks = s.ranks()
            if not check(set(ranks) == {0, 1}, f"found both ranks: {ranks}"):
                continue
            if (victim, sig) == (1, signal.SIGSTOP):  # idle for twice the timeout: the heartbeat keeps it alive
                time.sleep(2 * timeout)
                check(s.p.poll() is None and s.complete("hello") != "",
                      f"idle {2 * timeout} s with --ep-timeout {timeout}: still answers ({s.stderr()[-300:]})")
            os.kill(ranks[victim], sig)
            ended_within(s, 8 * timeout, f"idle server, rank {victim} {signal.Signals(sig).name}", messages)
        finally:
            s.close()


def test_mismatch(tmp, tiny):
    # Different checkpoints / numerics on the ranks (MPMD launch): refused at start on every rank.
    other = os.path.join(tmp, "tiny-other")
    run([DSV4, "make-model", "--preset", "tiny", "--seed", "7", "--no-tokenizer", "--out", other])
    ids = os.path.join(tmp, "ids-small.json")
    json.dump({"prompt": [5, 6, 7]}, open(ids, "w"))
    base = ["logits", "--ids", ids, "--out", os.path.join(tmp, "x.st"), "--expert-parallel"]
    for what, a, b in (("checkpoint", ["--model", tiny], ["--model", other]),
                       ("numerics", ["--model", tiny], ["--model", tiny, "--numerics", "plain"])):
        r = run(MPI + ["-np", "1", DSV4, *base, *a, ":", "-np", "1", DSV4, *base, *b], timeout=120)
        check(r.returncode != 0 and "rank 1 loaded a different model than rank 0" in r.stderr,
              f"mismatched {what} refused: exit {r.returncode}: {r.stderr.strip()[-300:]}")


def main():
    tmp = tempfile.mkdtemp(prefix="dsv4-ep-test-")
    try:
        tiny = os.path.join(tmp, "tiny")
        r = run([DSV4, "make-model", "--preset", "tiny", "--out", tiny])
        check(r.returncode == 0, f"make-model tiny: {r.stderr[-300:]}")
        only = os.environ.get("DSV4_EP_TEST_ONLY", "")  # a section by name, when debugging
        for name, f in (("logits", lambda: test_logits(tmp)), ("batched", lambda: test_batched(tmp)),
                        ("serve", lambda: test_serve(tmp, tiny)), ("failures", lambda: test_failures(tmp, tiny)),
                        ("idle", lambda: test_idle_failures(tmp, tiny))):
            if (only and name != only) or (SANITIZER and name == "failures"):
                continue
            t0 = time.time()
            try:
                f()
            except Exception as e:  # noqa: BLE001 - one broken section is one failure
                check(False, f"{name}: {e!r}")
            print(f"-- {name}: {time.time() - t0:.1f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
