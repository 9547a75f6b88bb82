"""`dsv4 serve --test-completions FILE`: bad uses are refused with a one-line error naming the
problem, before any model is loaded (the flag's happy path is the Claude Code e2e test)."""
import json
import os
import subprocess
import sys
import tempfile

BIN = sys.argv[1]


def serve(*args):
    # A model directory that does not exist: reaching the model load would be an error too, but
    # a different one.
    p = subprocess.run([BIN, "serve", "--model", "/nonexistent-model-dir", "--port", "0", *args],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


def expect_error(args, needle):
    code, err = serve(*args)
    assert code != 0, f"{args}: exit 0"
    assert needle in err, f"{args}: {needle!r} not in {err!r}"
    assert "nonexistent-model-dir" not in err, f"{args}: got as far as the model: {err!r}"


with tempfile.TemporaryDirectory() as d:
    good = os.path.join(d, "good.json")
    with open(good, "w") as f:
        json.dump(["a", "b"], f)
    bad_type = os.path.join(d, "obj.json")
    with open(bad_type, "w") as f:
        json.dump({"a": 1}, f)
    bad_entry = os.path.join(d, "entry.json")
    with open(bad_entry, "w") as f:
        json.dump(["a", 3], f)
    expect_error(["--test-completions", good], "--test-hooks")
    expect_error(["--test-hooks", "--test-completions", os.path.join(d, "missing.json")], "cannot read")
    expect_error(["--test-hooks", "--test-completions", bad_type], "is not a JSON array of completions")
    expect_error(["--test-hooks", "--test-completions", bad_entry], "entry 1 is neither a string nor")
    # A good file passes this check: the next error is the model directory.
    code, err = serve("--test-hooks", "--test-completions", good)
    assert code != 0 and "nonexistent-model-dir" in err, err
print("serve_flags_test: ok")
