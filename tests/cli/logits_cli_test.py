#!/usr/bin/env python3
"""`dsv4 logits` end to end against the official reference: for every golden case, feed the
reference's prompt/decode ids through the CLI (plain numerics, chunked prefill, with --mtp) and
compare all four logits tensors with expected-nosim.safetensors within 1e-4·rms."""
import json
import os
import struct
import subprocess
import sys
import tempfile

dsv4, golden = sys.argv[1], sys.argv[2]


def load(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        b, e = v["data_offsets"]
        fmt = {"F32": "f", "I32": "i"}[v["dtype"]]
        out[name] = (v["shape"], struct.unpack("<%d%s" % ((e - b) // 4, fmt), data[8 + n + b:8 + n + e]))
    return out


passed = failed = 0
cases = sorted(d for d in os.listdir(golden) if os.path.exists(os.path.join(golden, d, "config.json")))
for case in cases:
    ref = load(os.path.join(golden, case, "expected-nosim.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        ids = os.path.join(tmp, "ids.json")
        json.dump({"prompt": list(ref["input.prompt_ids"][1]), "decode": list(ref["input.decode_ids"][1])},
                  open(ids, "w"))
        out = os.path.join(tmp, "out.safetensors")
        r = subprocess.run([dsv4, "logits", "--model", os.path.join(golden, case), "--ids", ids, "--numerics",
                            "plain", "--mtp", "--chunk", "50", "--out", out], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{case}: dsv4 logits failed: {r.stderr}")
            failed += 1
            continue
        got = load(out)
    for name in ["logits.prefill", "logits.decode", "logits.mtp_prefill", "logits.mtp_decode"]:
        a, b = got[name], ref[name]
        rms = (sum(x * x for x in b[1]) / len(b[1])) ** 0.5
        err = max(abs(x - y) for x, y in zip(a[1], b[1])) / rms
        ok = a[0] == b[0] and err <= 1e-4
        print(f"{case} {name} shape {a[0]} max err {err:.2e} x rms {'ok' if ok else 'FAIL'}")
        passed, failed = passed + ok, failed + (not ok)
# A bad ids file is one clear error line and exit code 1.
with tempfile.NamedTemporaryFile("w", suffix=".json") as bad:
    bad.write('{"prompt": [1, "x"]}')
    bad.flush()
    r = subprocess.run([dsv4, "logits", "--model", os.path.join(golden, cases[0]), "--ids", bad.name, "--out",
                        "/dev/null"], capture_output=True, text=True)
    ok = r.returncode == 1 and "non-integer" in r.stderr and r.stderr.count("\n") == 1
    print(f"bad ids file -> exit {r.returncode}: {r.stderr.strip()} {'ok' if ok else 'FAIL'}")
    passed, failed = passed + ok, failed + (not ok)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
