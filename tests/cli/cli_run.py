"""What the `dsv4` command-line tests share: the list of failures, and a runner that fails a case
on a crash or a sanitizer report, on a non-zero exit where success is expected, and, for bad
input, on anything but a non-zero exit with one `dsv4 ...: error: ...` line on stderr."""
import subprocess

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")
failures = []


def fail(what):
    failures.append(what)
    print("FAIL:", what, flush=True)


def check(cond, what):
    if not cond:
        fail(what)
    return cond


def run(argv, stdin=None, ok=True, timeout=300):
    """Runs argv (the binary, then its arguments); returns (stdout, stderr) as text."""
    argv = [str(a) for a in argv]
    p = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    where = " ".join(argv[1:])[:200]
    if p.returncode < 0 or any(m in err for m in SANITIZER_MARKS):
        fail(f"{where}: crashed (exit {p.returncode})\n{err[-3000:]}")
    elif ok and p.returncode != 0:
        fail(f"{where}: exit {p.returncode}\n{err[-3000:]}")
    elif not ok:
        lines = [l for l in err.splitlines() if l.strip()]
        check(p.returncode != 0, f"{where}: bad input accepted (exit 0)")
        check(len(lines) == 1 and lines[0].startswith("dsv4") and "error:" in lines[0],
              f"{where}: expected one error line on stderr, got:\n{err[-3000:]}")
    return out, err
