#!/usr/bin/env python3
"""`dsv4 train` runs the separate dsv4-train program (apps/cli/train_launcher.h), so that no
other command loads libtorch. Checked through the binaries: dsv4 does not link libtorch while
dsv4-train does; `dsv4 train` reaches dsv4-train from dsv4's real directory (also when started
through a symbolic link) and passes stdout, stderr and the exit status through; a dsv4 whose
dsv4-train is missing says so in one line naming the path. In a build without the trainer
(DSV4_TEST_TRAIN_BUILT unset), `dsv4 train` says in one line how to build it.

usage: train_split_test.py DSV4_BINARY"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ beside the sources
from cli_run import check, failures, run

DSV4 = os.path.abspath(sys.argv[1])
TRAINER = os.path.join(os.path.dirname(DSV4), "dsv4-train")
TORCH_LIBS = ("libtorch", "libc10")


def shared_libs(binary):
    p = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"ldd {binary}: {p.stderr.strip()}")
    return [l.split()[0] for l in p.stdout.splitlines() if l.strip()]


def exit_code(argv):
    return subprocess.run(argv, capture_output=True, timeout=60).returncode


def one_error_line(argv, *wanted):
    """Runs argv expecting one error line (cli_run's rule) that contains every wanted text."""
    _, err = run(argv, ok=False, timeout=60)
    for w in wanted:
        check(w in err, f"{' '.join(argv[1:])}: error does not say '{w}': {err.strip()}")


def linkage():
    """dsv4 links no libtorch; dsv4-train does (so the names looked for are the right ones)."""
    if not check(os.path.isfile(TRAINER), f"no {TRAINER} beside dsv4"):
        return
    dsv4_libs, trainer_libs = shared_libs(DSV4), shared_libs(TRAINER)
    check(not [l for l in dsv4_libs if l.startswith(TORCH_LIBS)], f"dsv4 links libtorch: {dsv4_libs}")
    check([l for l in trainer_libs if l.startswith(TORCH_LIBS)], f"dsv4-train does not link libtorch: {trainer_libs}")


def pass_through(tmp):
    """`dsv4 train` is listed, and its help, errors and exit statuses are dsv4-train's."""
    out, _ = run([DSV4, "--help"])
    check(any(l.split()[:1] == ["train"] for l in out.splitlines()), f"dsv4 --help lists no train:\n{out}")
    out, _ = run([DSV4, "train", "--help"])
    check(f"{DSV4} train [OPTIONS]" in out and "--corpus" in out and "--resume" in out, f"dsv4 train --help:\n{out}")
    # A parse error (CLI11's exit code 106) and a run-time error (1) come back unchanged.
    args = ["train", "--out", os.path.join(tmp, "o")]
    one_error_line([DSV4, *args], "dsv4 train: error: --corpus is required")
    check(exit_code([DSV4, *args]) == 106, "exit status of a parse error")
    if os.path.isfile(TRAINER):
        check(exit_code([TRAINER, *args]) == 106, "dsv4-train's exit status of a parse error")
        # Run directly without the command name, dsv4-train takes its arguments as `train`'s.
        one_error_line([TRAINER, *args[1:]], "dsv4 train: error: --corpus is required")
        check(exit_code([TRAINER, *args[1:]]) == 106, "dsv4-train without `train`: exit status of a parse error")
    args = ["train", "--corpus", os.path.join(tmp, "nosuch.txt"), "--out", os.path.join(tmp, "o")]
    one_error_line([DSV4, *args], "cannot read corpus")
    check(exit_code([DSV4, *args]) == 1, "exit status of a run-time error")


def sibling_lookup(tmp):
    """dsv4-train is looked for beside the real binary, not beside a symbolic link to it; a dsv4
    without it says so in one line."""
    link_dir, lone_dir = os.path.join(tmp, "link"), os.path.join(tmp, "lone")
    os.makedirs(link_dir)
    os.symlink(DSV4, os.path.join(link_dir, "dsv4"))
    out, _ = run([os.path.join(link_dir, "dsv4"), "train", "--help"])
    check("--corpus" in out, f"dsv4 train --help through a symbolic link:\n{out}")
    # A copy of dsv4 alone (a hard link where possible: the sanitizer build's binary is large).
    os.makedirs(lone_dir)
    lone = os.path.join(lone_dir, "dsv4")
    try:
        os.link(DSV4, lone)
    except OSError:
        shutil.copy2(DSV4, lone)
    missing = os.path.join(lone_dir, "dsv4-train")
    one_error_line([lone, "train", "--help"], f"dsv4 train: error: cannot run the trainer program {missing}",
                   "No such file")
    run([lone, "--version"])  # the rest of dsv4 works without it


def without_trainer():
    for args in (["train", "--corpus", "c.txt", "--out", "o"], ["train", "--help"], ["train"]):
        one_error_line([DSV4, *args], "dsv4 train: error: this dsv4 was built without the trainer", "-DDSV4_TRAIN=ON")
    out, _ = run([DSV4, "--help"])
    check(any(l.split()[:1] == ["train"] and "not in this build" in l for l in out.splitlines()),
          f"dsv4 --help does not say that train is not built:\n{out}")


def main():
    built = os.environ.get("DSV4_TEST_TRAIN_BUILT") == "1"  # set by tests/cli/CMakeLists.txt
    # Inside the build tree, so that a hard link of the binary is on its file system.
    tmp = tempfile.mkdtemp(prefix="dsv4-train-split-", dir=os.path.dirname(DSV4))
    try:
        if built:
            linkage()
            pass_through(tmp)
            sibling_lookup(tmp)
        else:
            without_trainer()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"trainer built: {built}; {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
