#!/usr/bin/env python3
"""Every `dsv4` subcommand (serve has its own suite) and every flag its --help documents, run
through the built binary: outputs checked against the reference data in ../shared/tokenizer or
against properties that must hold (round trips, determinism, exact speculative decoding, tensor
shapes), and bad arguments checked to give one error line on stderr and a non-zero exit, never
a crash or a sanitizer report.

The suite fails when a flag in some subcommand's --help is used by no case here, so a flag added
later without a test is caught.

usage: cli_commands_test.py DSV4_BINARY SHARED_DIR"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ beside the sources
from cli_run import SANITIZER_MARKS, check, fail, failures, run

DSV4, SHARED = sys.argv[1], sys.argv[2]
TOK_DIR = os.path.join(SHARED, "tokenizer")
COMMANDS = ["tokenize", "detokenize", "template", "parse-completion", "make-model", "inspect", "logits", "run",
            "chat", "bench"]
used = {c: set() for c in COMMANDS}  # long flags each subcommand was run with
aliases = {c: {} for c in COMMANDS}  # short -> long, from --help


def dsv4(cmd, *args, stdin=None, ok=True, timeout=300):
    """Runs `dsv4 cmd args`; ok=True expects exit 0, ok=False one error line and exit != 0."""
    for a in args:
        if isinstance(a, str) and a.startswith("-") and len(a) > 1 and not a[1].isdigit():
            used[cmd].add(aliases[cmd].get(a, a))
    return run([DSV4, cmd, *args], stdin=stdin, ok=ok, timeout=timeout)


def help_flags(cmd):
    """The long flags `dsv4 cmd --help` documents (recording -x,--long aliases)."""
    out, _ = dsv4(cmd, "--help")
    flags = set()
    for line in out.splitlines():
        m = re.match(r"\s+(-[^\s]+)", line)
        if not m:
            continue
        names = m.group(1).split(",")
        long = [n for n in names if n.startswith("--")]
        for n in names:
            if long and not n.startswith("--"):
                aliases[cmd][n] = long[0]
        flags.update(long)
    return flags


def jsonl(name):
    with open(os.path.join(TOK_DIR, name), encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def read_f32(path, name):
    header, base = safetensors_header(path)
    b, e = header[name]["data_offsets"]
    with open(path, "rb") as f:
        f.seek(base + b)
        data = f.read(e - b)
    return list(struct.unpack(f"<{len(data) // 4}f", data))


MPIEXEC = os.environ.get("DSV4_TEST_MPIEXEC")  # set by CTest in a -DDSV4_MPI=ON build


def mpi_dsv4(np, cmd, *args, stdin=None, timeout=300):
    """`mpirun -np N dsv4 cmd args` on this machine (the flags docs/distributed.md gives);
    returns (exit code, stdout, stderr)."""
    for a in args:
        if isinstance(a, str) and a.startswith("--"):
            used[cmd].add(a)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    argv = [MPIEXEC, "--oversubscribe", "--mca", "btl", "self,vader", "--mca", "oob_tcp_if_include", "lo",
            "-np", str(np), DSV4, cmd, *[str(a) for a in args]]
    p = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, env=env)
    err = p.stderr.decode(errors="replace")
    check(not any(m in err for m in SANITIZER_MARKS), f"mpirun dsv4 {cmd}: sanitizer report\n{err[-3000:]}")
    return p.returncode, p.stdout.decode(errors="replace"), err


def bad_args(cmd, cases):
    for args in cases:
        dsv4(cmd, *args, ok=False)


# --- tokenizer commands (expected values: ../shared/tokenizer, outputs of the reference tokenizer)

def test_tokenizer(tmp, model):
    tok = os.path.join(TOK_DIR, "tokenizer.json")
    cases = jsonl("tokenize_cases.jsonl")
    picked = cases[:3] + [c for c in cases if any(ord(ch) > 127 for ch in c["text"]) and c["text"].strip()][:3]
    # Each tokenizer load takes a while (seconds under the sanitizers): most cases go through --jsonl.
    lines = [json.dumps({"text": c["text"]}) for c in picked]
    out, _ = dsv4("tokenize", "--model", tok, "--jsonl", write(f"{tmp}/t.jsonl", "\n".join(lines[:3]) + "\n\n" +
                                                                 "\n".join(lines[3:])))
    got = [json.loads(l)["ids"] for l in out.splitlines()]
    check(got == [c["ids"] for c in picked], f"tokenize --jsonl: {got}")
    c = picked[-1]
    out, _ = dsv4("tokenize", "--model", tok, "--text", c["text"])
    check(json.loads(out) == c["ids"], f"tokenize --text {c['text']!r}: {out.strip()} != {c['ids']}")
    back, _ = dsv4("detokenize", "--model", tok, "--ids", json.dumps(c["ids"]))
    check(back == c["text"] + "\n", f"detokenize {c['ids']}: {back!r} != {c['text']!r}")
    # A file's whole content, from a path and from stdin; JSONL, one result per non-blank line.
    text = "Hello, world!\nThe quick brown fox jumps over the lazy dog.\n"
    ids = json.loads(dsv4("tokenize", "--model", tok, "--file", write(f"{tmp}/t.txt", text))[0])
    ids_stdin = json.loads(dsv4("tokenize", "--model", tok, "--file", "-", stdin=text.encode())[0])
    check(ids == ids_stdin and len(ids) > 10, f"tokenize --file: {ids} / stdin {ids_stdin}")
    back, _ = dsv4("detokenize", "--model", tok, "--ids", ",".join(map(str, ids)))
    check(back == text + "\n", f"tokenize/detokenize round trip of a file: {back!r}")
    # skip_special_tokens, against the reference's decoded_skip_special.
    special = [c for c in jsonl("reference_v4_cases.jsonl") if c["ids"] and c["ids"][0] in (0, 1)]
    if check(special, "no reference case with special tokens"):
        c = special[0]
        out, _ = dsv4("detokenize", "--model", tok, "--ids", json.dumps(c["ids"]), "--skip-special")
        check(out == c["decoded_skip_special"] + "\n", f"detokenize --skip-special: {out!r}")
        out, _ = dsv4("detokenize", "--model", tok, "--ids", json.dumps(c["ids"]))
        check(out != c["decoded_skip_special"] + "\n", "detokenize without --skip-special dropped the specials")

    bad_args("tokenize", [["--text", "x"], ["--model", tok], ["--model", tok, "--text", "x", "--file", "y"],
                          ["--model", f"{tmp}/no-such-dir", "--text", "x"], ["--model", tok, "--file", f"{tmp}/none"],
                          ["--model", tok, "--jsonl", write(f"{tmp}/bad.jsonl", "{\"text\": 1}\n")],
                          ["--model", tok, "--text", "x", "--bogus"]])
    bad_args("detokenize", [["--model", tok], ["--model", tok, "--ids", "1,x"],
                            ["--model", tok, "--ids", "99999999"], ["--model", f"{tmp}/none", "--ids", "1"],
                            ["--model", tok, "--ids", "1", "--skip-special=maybe"]])


def test_template(tmp, model):
    tok = os.path.join(TOK_DIR, "tokenizer.json")
    cases = jsonl("chat_encode_cases.jsonl")

    def flags(o):
        f = []
        if o["thinking_mode"] == "thinking":
            f.append("--thinking")
        if not o["drop_thinking"]:
            f.append("--keep-thinking")
        if o["reasoning_effort"]:
            f += ["--effort", o["reasoning_effort"]]
        if not o["add_default_bos_token"]:
            f.append("--no-bos")
        return f

    # One case per combination of options, so every flag is compared with the reference.
    seen = {}
    for c in cases:
        seen.setdefault(tuple(flags(c["options"])), c)
    check(any("--keep-thinking" in k for k in seen) and any("--no-bos" in k for k in seen)
          and any("--effort" in k for k in seen), f"option combinations in the reference data: {list(seen)}")
    for i, (fl, c) in enumerate(sorted(seen.items())):
        path = write(f"{tmp}/m{i}.json", json.dumps(c["messages"], ensure_ascii=False))
        out, _ = dsv4("template", "--model", tok, "--messages", path, *fl)
        check(out == c["prompt"], f"template {c['name']} {fl}: prompt differs from the reference")
        if i == 0:  # --ids loads the tokenizer (slow under the sanitizers): once
            out, _ = dsv4("template", "--model", tok, "--messages", path, "--ids", *fl)
            check(json.loads(out) == c["prompt_ids"], f"template --ids {c['name']}: ids differ from the reference")
    c = cases[0]
    out, _ = dsv4("template", "--model", model, "--messages", "-", *flags(c["options"]),
                  stdin=json.dumps({"messages": c["messages"]}).encode())
    check(out == c["prompt"] and "<｜User｜>" in out and "<｜Assistant｜>" in out, "template from stdin, object form")
    out, _ = dsv4("template", "--model", tok, "--messages", write(f"{tmp}/e.json", '[{"role":"user","content":"x"}]'),
                  "--thinking", "--effort", "none")
    check(out.endswith("<think>"), f"template --effort none: {out!r}")

    bad_args("template", [["--model", tok], ["--messages", f"{tmp}/m0.json"],
                          ["--model", tok, "--messages", f"{tmp}/none.json"],
                          ["--model", tok, "--messages", write(f"{tmp}/bad.json", "{not json")],
                          ["--model", tok, "--messages", write(f"{tmp}/num.json", "42")],
                          ["--model", tok, "--messages", write(f"{tmp}/deep.json", '{"messages": [], "tools": [' +
                                                             "[" * 100000 + "]" * 100000 + "]}")],
                          ["--model", tok, "--messages", f"{tmp}/m0.json", "--effort", "low"],
                          ["--model", f"{tmp}/none", "--messages", f"{tmp}/m0.json", "--ids"]])


def test_parse_completion(tmp):
    for i, c in enumerate(jsonl("chat_parse_cases.jsonl")):
        path = write(f"{tmp}/c{i}.txt", c["completion"])
        thinking = ["--thinking"] if c["options"]["thinking_mode"] == "thinking" else []
        if "message" in c:
            out, _ = dsv4("parse-completion", "--model", "x", "--file", path, *thinking)
            check(json.loads(out) == c["message"], f"parse-completion {c['name']}: {out}")
        else:  # the reference raises: one error line
            dsv4("parse-completion", "--model", "x", "--file", path, *thinking, ok=False)
    c = jsonl("chat_parse_cases.jsonl")[0]
    out, _ = dsv4("parse-completion", "--model", "x", "--file", "-", "--thinking", stdin=c["completion"].encode())
    check(json.loads(out) == c["message"], "parse-completion from stdin")
    bad_args("parse-completion", [["--file", f"{tmp}/c0.txt"], ["--model", "x"],
                                  ["--model", "x", "--file", f"{tmp}/none.txt"],
                                  ["--model", "x", "--file", f"{tmp}/c0.txt", "--bogus"]])


# --- model commands, on small generated checkpoints

def cached_tokenizer_base():
    root = os.environ.get("DSV4_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dsv4")
    for dirpath, _, files in os.walk(root):
        if "tokenizer.json" in files and "npm-tokenizer" in dirpath:
            return os.path.join(dirpath, "tokenizer.json")
    return None


def test_make_model(tmp):
    """Returns the directory of a small checkpoint for the other commands."""
    m = f"{tmp}/model"
    small = ["--preset", "tiny", "--layers", "4", "--experts", "8"]
    out, _ = dsv4("make-model", *small, "--out", m, "--seed", "7")
    check("4 layers" in out and "8 experts" in out, f"make-model summary: {out}")
    for f in ("config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"):
        check(os.path.exists(os.path.join(m, f)), f"make-model: no {f}")
    cfg = json.load(open(f"{m}/config.json"))
    check(cfg["num_hidden_layers"] == 4 and cfg["n_routed_experts"] == 8, f"make-model config: {cfg}")
    shards = sorted(f for f in os.listdir(m) if f.endswith(".safetensors"))
    first = open(os.path.join(m, shards[0]), "rb").read()
    # Same seed → same bytes (over the existing checkpoint: --force); another seed → other weights.
    dsv4("make-model", *small, "--out", m, ok=False)  # exists, no --force
    dsv4("make-model", *small, "--out", m, "--seed", "7", "--force", "--no-tokenizer")
    check(open(os.path.join(m, shards[0]), "rb").read() == first, "make-model: same seed, different bytes")
    m2 = f"{tmp}/model2"
    base = cached_tokenizer_base()
    if check(base, "no cached V3 base tokenizer (scripts/fetch_tokenizer_base.sh)"):
        dsv4("make-model", *small, "--out", m2, "--seed", "8", "--tokenizer-base", base)
        check(open(os.path.join(m2, shards[0]), "rb").read() != first, "make-model: seeds 7 and 8 give the same bytes")
        check(open(f"{m2}/tokenizer.json", "rb").read() == open(f"{TOK_DIR}/tokenizer.json", "rb").read(),
              "make-model: tokenizer.json differs from the reference V4 tokenizer.json")
        shutil.copy(f"{m2}/tokenizer.json", m)  # --no-tokenizer above removed nothing, but be sure
        shutil.copy(f"{m2}/tokenizer_config.json", m)
        shutil.rmtree(m2)
    bad_args("make-model", [["--out", f"{tmp}/x"], ["--preset", "tiny"], ["--preset", "huge", "--out", f"{tmp}/x"],
                            ["--preset", "tiny", "--out", f"{tmp}/x", "--layers", "0"],
                            ["--preset", "tiny", "--out", f"{tmp}/x", "--experts", "3"],
                            ["--preset", "tiny", "--out", f"{tmp}/x", "--seed", "abc"],
                            ["--preset", "tiny", "--out", f"{tmp}/x", "--tokenizer-base", f"{tmp}/none.json"]])
    return m


def test_inspect(tmp, m):
    out, _ = dsv4("inspect", "--model", m, "--context", "1000")
    check("layers       4 main + 1 MTP" in out and "(inventory validated)" in out, f"inspect: {out}")
    check(out.count("at 1000 tokens") == 2, f"inspect --context: {out}")
    check("available to this process" in out and "without the routed experts" in out
          and "copied into memory (fits)" in out, f"inspect memory plan: {out}")
    bad_args("inspect", [[], ["--model", f"{tmp}/none"], ["--model", TOK_DIR], ["--model", m, "--context", "x"],
                         ["--model", m, "--context", "0"]])


def test_logits(tmp, m):
    V = json.load(open(f"{m}/config.json"))["vocab_size"]
    ids = write(f"{tmp}/ids.json", json.dumps({"prompt": [19923, 14, 2058, 3, 671], "decode": [4787, 13769, 46012]}))
    whole, chunked = f"{tmp}/whole.safetensors", f"{tmp}/chunked.safetensors"
    dsv4("logits", "--model", m, "--ids", ids, "--out", whole, "--numerics", "plain", "--mtp")
    dsv4("logits", "--model", m, "--ids", ids, "--out", chunked, "--numerics", "plain", "--chunk", "2")
    h, _ = safetensors_header(whole)
    want = {"logits.prefill": [5, V], "logits.decode": [3, V], "logits.mtp_prefill": [5, V], "logits.mtp_decode": [2, V]}
    got = {k: v["shape"] for k, v in h.items() if k != "__metadata__"}
    check(got == want, f"logits --mtp tensors: {got}")
    check(set(safetensors_header(chunked)[0]) - {"__metadata__"} == {"logits.prefill", "logits.decode"},
          "logits without --mtp wrote MTP tensors")
    # Prefill in chunks of 2 computes the same logits (plain numerics: F32 throughout).
    for name in ("logits.prefill", "logits.decode"):
        a, b = read_f32(whole, name), read_f32(chunked, name)
        rms = (sum(x * x for x in a) / len(a)) ** 0.5
        worst = max(abs(x - y) for x, y in zip(a, b))
        check(rms > 0 and worst <= 1e-4 * rms, f"logits --chunk 2, {name}: max diff {worst} vs rms {rms}")
    dsv4("logits", "--model", m, "--ids", ids, "--out", whole, "--numerics", "reference")
    check(all(v == v for v in read_f32(whole, "logits.decode")), "logits --numerics reference: NaN")
    bad_args("logits", [["--model", m, "--ids", ids], ["--model", m, "--out", whole], ["--ids", ids, "--out", whole],
                        ["--model", m, "--ids", f"{tmp}/none.json", "--out", whole],
                        ["--model", m, "--ids", write(f"{tmp}/bad.json", '{"prompt": []}'), "--out", whole],
                        ["--model", m, "--ids", write(f"{tmp}/bad2.json", '{"prompt": ["a"]}'), "--out", whole],
                        ["--model", m, "--ids", write(f"{tmp}/bad3.json", '{"prompt": [99999999]}'), "--out", whole],
                        ["--model", m, "--ids", ids, "--out", whole, "--chunk", "x"],
                        ["--model", m, "--ids", ids, "--out", whole, "--numerics", "fast"],
                        ["--model", m, "--ids", ids, "--out", f"{tmp}/no/such/dir/x.safetensors"],
                        ["--model", f"{tmp}/none", "--ids", ids, "--out", whole]])


STATS = re.compile(r"\[prompt (\d+) tokens.*generated (\d+) tokens.*\| (\w+)\]")


def test_run(tmp, m):
    def run(*args):
        out, err = dsv4("run", "--model", m, "-p", "Hello", *args)
        s = STATS.findall(err)
        check(len(s) == 1, f"run {args}: no stats line in {err!r}")
        return out, (s[0] if s else None)

    sampled = ["--temp", "0.9", "--top-p", "0.95", "--top-k", "40", "--min-p", "0.01", "--seed", "5", "-n", "6"]
    a, sa = run(*sampled)
    b, _ = run(*sampled)
    check(a == b and a.strip(), f"run: the same --seed gave different text:\n{a!r}\n{b!r}")
    check(sa is not None and int(sa[1]) <= 6, f"run -n 6: {sa}")
    c, _ = run(*sampled[:-4], "--seed", "6", "--max-tokens", "6")
    check(c != a, "run: seeds 5 and 6 gave the same sampled text")
    # MTP speculative decoding is exact: greedy text identical with and without it.
    g, sg = run("--max-tokens", "8", "--no-think", "--no-mmap")
    gs, _ = run("--max-tokens", "8", "--speculative", "--mmap")
    check(g == gs, f"run --speculative changed the greedy text:\n{g!r}\n{gs!r}")
    # Routed experts streamed from disk through a cache of a few experts (evicting all the time):
    # the same greedy text, MTP speculation included (issue 16).
    gc, _ = run("--max-tokens", "8", "--no-think", "--expert-cache-gb", "0.0005")
    gcs, _ = run("--max-tokens", "8", "--speculative", "--expert-cache-gb", "0.0005")
    check(g == gc == gcs, f"run --expert-cache-gb changed the greedy text:\n{g!r}\n{gc!r}\n{gcs!r}")
    _, err = dsv4("run", "--model", m, "-p", "x", "--expert-cache-gb", "0.00001", ok=False)
    check("expert cache budget" in err and "give at least" in err, f"run with a budget below 6 experts: {err!r}")
    t, st = run("-n", "4", "--think", "--effort", "max", "--numerics", "plain")
    check(t.startswith("[thinking] ") or t.strip() == "" or st[2] == "stop", f"run --think: {t!r}")
    # --ctx bounds prompt + answer: a context just over the prompt stops generation early.
    _, sc = run("-n", "50", "--ctx", str(int(sg[0]) + 3))
    check(sc is not None and int(sc[1]) <= 3, f"run --ctx: {sc}")
    bad_args("run", [["--model", m], ["--model", m, "-p", "x", "--bogus"], ["--model", m, "-p", "x", "-n", "abc"],
                     ["--model", m, "-p", "x", "-n", "0"], ["--model", m, "-p", "x", "--temp", "-1"],
                     ["--model", m, "-p", "x", "--top-p", "2"], ["--model", m, "-p", "x", "--seed", "-1"],
                     ["--model", m, "-p", "x", "--effort", "low"], ["--model", m, "-p", "x", "--think", "--no-think"],
                     ["--model", m, "-p", "x", "--mmap", "--no-mmap"], ["--model", f"{tmp}/none", "-p", "x"],
                     ["--model", m, "-p", "x", "--expert-cache-gb", "0"], ["--model", m, "-p", "x", "--expert-cache-gb", "-1"],
                     ["--model", m, "-p", "x", "--expert-cache-gb", "1", "--mmap"],
                     ["--model", TOK_DIR, "-p", "x"], ["--model", m, "-p", "x", "--ctx", "2"]])


def test_chat(tmp, m):
    script = "Hello there\n/think on\nAnd a second question?\n/clear\n/think off\nThird\n/exit\n"
    args = ["--model", m, "--max-tokens", "5", "--temp", "0.7", "--top-p", "0.9", "--top-k", "20",
            "--min-p", "0.02", "--seed", "3", "--effort", "high", "--speculative", "--ctx", "512",
            "--numerics", "reference", "--mmap"]
    out, err = dsv4("chat", *args, stdin=script.encode())
    turns = STATS.findall(err)
    check(len(turns) == 3, f"chat: expected 3 answered turns, stderr:\n{err}")
    check("(thinking on)" in out and "(history cleared)" in out and "(thinking off)" in out, f"chat: {out!r}")
    def prompt_len(*texts, thinking=False):
        msgs = [{"role": "user", "content": t} for t in texts]
        out, _ = dsv4("template", "--model", m, "--messages", write(f"{tmp}/chat.json", json.dumps(msgs)), "--ids",
                      *(["--thinking"] if thinking else []))
        return len(json.loads(out))

    if len(turns) == 3:
        # Turn 1 and turn 3 (after /clear) prefill exactly their rendered prompt. Turn 2 continues
        # turn 1 in the session: it prefills only the end-of-sentence token closing turn 1 and the
        # new turn (as many tokens as the new turn rendered alone, whose BOS it does not have).
        check(int(turns[0][0]) == prompt_len("Hello there"), f"chat turn 1 prompt: {turns}")
        check(int(turns[2][0]) == prompt_len("Third"), f"chat turn 3 (after /clear) prompt: {turns}")
        check(int(turns[1][0]) == prompt_len("And a second question?", thinking=True),
              f"chat turn 2 did not continue turn 1: {turns}")
    again, _ = dsv4("chat", *args, stdin=script.encode())
    check(again == out, "chat: the same seed and input gave a different transcript")
    streamed, _ = dsv4("chat", *[a for a in args if a != "--mmap"], "--expert-cache-gb", "0.0005", stdin=script.encode())
    check(streamed == out, f"chat --expert-cache-gb: a different transcript:\n{streamed!r}\n{out!r}")
    out, err = dsv4("chat", "--model", m, "-n", "3", "--think", "--no-mmap", stdin=b"Hi\n")  # EOF ends the chat
    check(len(STATS.findall(err)) == 1 and "[thinking] " in out, f"chat --think: {out!r}")
    dsv4("chat", "--model", m, "--no-think", "-n", "2", stdin=b"")
    bad_args("chat", [["--model", m, "--bogus"], ["--model", m, "--top-k", "x"], ["--model", f"{tmp}/none"],
                      ["--model", m, "-p", "x"], ["--model", m, "--numerics", "fast"]])


def test_state(tmp, m):
    """run --save-state / --load-state and chat --session: a split run or chat equals the
    uninterrupted one; bad, corrupted, truncated, other-model and half-written files are refused."""
    # ~94 prompt tokens + 50 generated: the splits save before and after position 128, where the
    # window ring wraps and the ratio-128 layer completes its first entry (ratio-4 entries complete
    # every 4 tokens), so a restored state continues through every layer kind's block boundary.
    prompt = " ".join(f"item{i}" for i in range(45))
    flags = ["--model", m, "-p", prompt, "--temp", "0.8", "--seed", "11"]
    full, _ = dsv4("run", *flags, "-n", "50", "--save-state", f"{tmp}/full.st")
    for k in (20, 40):
        a, _ = dsv4("run", *flags, "-n", str(k), "--save-state", f"{tmp}/a.st")
        b, _ = dsv4("run", "--model", m, "--load-state", f"{tmp}/a.st", "--temp", "0.8", "--seed", "11",
                    "-n", str(50 - k), "--save-state", f"{tmp}/b.st")
        check((a + b).replace("\n", "") == full.replace("\n", ""),
              f"run split after {k} tokens: {a!r} + {b!r} != {full!r}")
        check(open(f"{tmp}/b.st", "rb").read() == open(f"{tmp}/full.st", "rb").read(),
              f"run split after {k} tokens: the final state file differs from the uninterrupted run's")
    # Greedy with MTP speculation (the state file carries the MTP block's state).
    spec = ["--model", m, "--speculative"]
    g, _ = dsv4("run", *spec, "-p", prompt, "-n", "30")
    g1, _ = dsv4("run", *spec, "-p", prompt, "-n", "12", "--save-state", f"{tmp}/g.st")
    g2, _ = dsv4("run", *spec, "--load-state", f"{tmp}/g.st", "-n", "18")
    check((g1 + g2).replace("\n", "") == g.replace("\n", ""), f"run --speculative split: {g1!r} + {g2!r} != {g!r}")
    # A new turn on a loaded state.
    out, err = dsv4("run", "--model", m, "--load-state", f"{tmp}/full.st", "-p", "And then?", "-n", "3")
    check(STATS.search(err) is not None, f"run --load-state -p: {err!r}")

    # chat, in both numerics: two turns, quit, resume from the session file: the third turn
    # equals an uninterrupted chat's.
    turns = ["Hello there", prompt, "Third turn"]
    for numerics in ("plain", "reference"):  # reference last: its session file is used below
        args = ["--model", m, "-n", "24", "--temp", "0.7", "--seed", "3", "--numerics", numerics]
        whole, _ = dsv4("chat", *args, stdin=("\n".join(turns) + "\n/exit\n").encode())
        s = f"{tmp}/chat-{numerics}.st"
        first, _ = dsv4("chat", *args, "--session", s, stdin=("\n".join(turns[:2]) + "\n/exit\n").encode())
        third, err = dsv4("chat", *args, "--session", s, stdin=(turns[2] + "\n").encode())
        check("resumed" in err, f"chat --session did not resume ({numerics}): {err!r}")
        # Transcripts: "> answer1\n> answer2\n> " (then /exit) and "> answer3\n> " (then EOF).
        check(first.endswith("> ") and first[:-2] + third == whole,
              f"chat --session ({numerics}): the resumed chat {first!r} + {third!r} differs from the uninterrupted {whole!r}")

    # Bad files: one error line each, naming the cause.
    good = open(f"{tmp}/full.st", "rb").read()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x08
    open(f"{tmp}/flipped.st", "wb").write(bytes(flipped))
    open(f"{tmp}/short.st", "wb").write(good[: len(good) // 3])
    open(f"{tmp}/junk.st", "wb").write(b"not a state file at all, just text\n")
    other = f"{tmp}/other"  # the same architecture with other weights
    dsv4("make-model", "--preset", "tiny", "--layers", "4", "--experts", "8", "--out", other, "--seed", "9",
         "--no-tokenizer")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{m}/{f}", other)
    causes = {"missing.st": "cannot open", "flipped.st": "checksum mismatch", "short.st": "truncated",
              "junk.st": "not a dsv4 state file"}
    for name, cause in causes.items():
        _, err = dsv4("run", "--model", m, "--load-state", f"{tmp}/{name}", ok=False)
        check(cause in err, f"run --load-state {name}: {err!r}")
    _, err = dsv4("run", "--model", other, "--load-state", f"{tmp}/full.st", "-p", "x", ok=False)
    check("different model" in err, f"run --load-state (other model): {err!r}")
    _, err = dsv4("run", "--model", m, "--load-state", f"{tmp}/full.st", "--numerics", "plain", ok=False)
    check("numerics" in err, f"run --load-state (other numerics): {err!r}")
    _, err = dsv4("run", "--model", m, "--load-state", s, ok=False)  # a chat's answers are complete
    check("--prompt" in err, f"run --load-state of a finished answer: {err!r}")
    _, err = dsv4("chat", "--model", m, "--session", f"{tmp}/flipped.st", stdin=b"hi\n", ok=False)
    check("checksum mismatch" in err, f"chat --session (corrupted): {err!r}")
    dsv4("run", "--model", m, "-p", "x", "--save-state", f"{tmp}/no/such/dir.st", ok=False)
    dsv4("chat", "--model", m, "--session", f"{tmp}/no/such/dir.st", stdin=b"hi\n", ok=False)
    # A writer killed mid-write (test hook: exit after N bytes) leaves the old file, which loads.
    for n in (0, 100, len(good) // 2):
        env = dict(os.environ, DSV4_STATE_FILE_CRASH_AFTER=str(n))
        p = subprocess.run([DSV4, "run", "--model", m, "-p", "x", "-n", "2", "--save-state", f"{tmp}/full.st"],
                           env=env, capture_output=True, timeout=300)
        check(p.returncode == 86, f"crash hook after {n} bytes: exit {p.returncode}")
        check(open(f"{tmp}/full.st", "rb").read() == good, f"a crash after {n} bytes changed the old file")
    dsv4("run", "--model", m, "--load-state", f"{tmp}/full.st", "-p", "still loads", "-n", "1")


def test_expert_parallel(tmp, m):
    """--expert-parallel, --ep-waves, --ep-timeout on logits, run, chat and bench: under mpirun -np 2
    the output equals one process's (logits byte for byte); without MPI, one error line."""
    ep = ["--expert-parallel", "--ep-waves", "2", "--ep-timeout", "60"]
    for cmd in ("logits", "run", "chat", "bench"):
        bad_args(cmd, [["--model", m, "--expert-parallel", "--ep-waves", "0"], ["--model", m, "--ep-timeout", "0"]])
    if os.environ.get("DSV4_TEST_MPI_BUILT") and not MPIEXEC:
        return  # an MPI build whose mpirun cases run elsewhere (the release build: docs/distributed.md)
    ids = write(f"{tmp}/ep-ids.json", json.dumps({"prompt": [19923, 14, 2058, 3, 671, 9, 88], "decode": [4787, 13769]}))
    if not MPIEXEC:
        for cmd, extra in (("logits", ["--ids", ids, "--out", f"{tmp}/x"]), ("run", ["-p", "x"]),
                           ("chat", []), ("bench", [])):
            _, err = dsv4(cmd, "--model", m, *extra, *ep, ok=False)
            check("built without MPI" in err, f"{cmd} --expert-parallel without MPI: {err}")
        return
    one, two = f"{tmp}/ep-one.safetensors", f"{tmp}/ep-two.safetensors"
    dsv4("logits", "--model", m, "--ids", ids, "--out", one, "--mtp", "--chunk", "3")
    rc, _, err = mpi_dsv4(2, "logits", "--model", m, "--ids", ids, "--out", two, "--mtp", "--chunk", "3", *ep)
    check(rc == 0 and open(one, "rb").read() == open(two, "rb").read(), f"logits -np 2 byte-identical: {err[-500:]}")
    want, _ = dsv4("run", "--model", m, "-p", "Hello", "-n", "12")
    rc, got, err = mpi_dsv4(2, "run", "--model", m, "-p", "Hello", "-n", "12", *ep)
    check(rc == 0 and got == want, f"run -np 2 = one process: {got!r} vs {want!r} {err[-500:]}")
    script = b"Hello there\nAnd a second question?\n/exit\n"
    want, _ = dsv4("chat", "--model", m, "--max-tokens", "6", stdin=script)
    rc, got, err = mpi_dsv4(2, "chat", "--model", m, "--max-tokens", "6", *ep, stdin=script)
    check(rc == 0 and got == want, f"chat -np 2 = one process: {got!r} vs {want!r} {err[-500:]}")
    rc, out, err = mpi_dsv4(2, "bench", "--model", m, "--json", "--prompt", "8", "--gen", "2", "--reps", "1", *ep,
                            timeout=600)
    try:
        e = json.loads(out)["expert_parallel"]
        check(rc == 0 and e["ranks"] == 2 and e["waves"] == 2 and e["bytes_sent_per_token_layer"] > 0
              and e["moe_calls"] > 0, f"bench -np 2 expert_parallel: {e}")
    except (ValueError, KeyError) as x:
        fail(f"bench -np 2 --json: {x!r}: {out[-500:]} {err[-500:]}")
    # A load error (here a missing model) ends every rank, with the message.
    rc, _, err = mpi_dsv4(2, "run", "--model", f"{tmp}/none", "-p", "x", *ep)
    check(rc != 0 and err.count("dsv4: error: expert parallelism: rank 0: ") == 1 and "no config.json" in err,
          f"-np 2 with a missing model: {err[-500:]}")
    # Streamed experts and a rank's share of them do not combine: one error line, nothing run.
    rc, out, err = mpi_dsv4(2, "run", "--model", m, "-p", "x", *ep, "--expert-cache-gb", "0.0005")
    check(rc != 0 and not out and err.count("dsv4: error:") == 1
          and "--expert-cache-gb cannot be combined with --expert-parallel" in err,
          f"-np 2 with --expert-cache-gb: {err[-500:]}")


def test_bench(tmp, m):
    out, _ = dsv4("bench", "--model", m, "--json", "--prompt", "8", "--gen", "2", "--context", "16", "--threads", "1",
                  "--reps", "1", "--no-mmap", "--numerics", "plain", "--isa", "scalar", timeout=600)
    try:
        j = json.loads(out)
    except json.JSONDecodeError:
        return fail(f"bench --json: not JSON:\n{out}")
    for k in ("read_bandwidth_gbs", "dot_peak_gflops", "f32_peak_gflops", "load_s", "rss_gb", "prefill_tokens_per_s",
              "prefill_gflops", "prefill_flop_per_token", "prefill_peak_fraction", "decode_tokens_per_s",
              "decode_filled_tokens_per_s", "decode_bytes_per_token", "decode_gbs", "decode_bandwidth_fraction"):
        check(isinstance(j.get(k), (int, float)) and j[k] > 0, f"bench --json: {k} = {j.get(k)}")
    check(j.get("isa") == "scalar" and j.get("threads") == 1 and j.get("numerics") == "plain"
          and j.get("prompt_tokens") == 8 and j.get("decode_filled_context") == 18 and j.get("repetitions") == 1
          and j.get("weights_copied") is True, f"bench --json settings: {j}")
    # Named for what it is: with --isa scalar the peak is no BF16 figure.
    check(j.get("dot_peak_kind", "").startswith("f32 mul+add") and "bf16_peak_gflops" not in j,
          f"bench --isa scalar peak: {j.get('dot_peak_kind')}")
    # (No bound on the fractions: they are timings, and this machine type is shared and noisy.)
    out, _ = dsv4("bench", "--model", m, "--json", "--prompt", "8", "--gen", "2", "--reps", "1",
                  "--expert-cache-gb", "0.0005", timeout=600)
    try:
        e = json.loads(out).get("expert_cache", {})
    except json.JSONDecodeError:
        e = {}
    check(e.get("cache_experts", 0) >= 6 and e.get("resident_bytes", 0) > 0 and e.get("disk_gbs", 0) > 0
          and 0 <= e.get("hit_rate", -1) < 1 and e.get("decode_disk_bytes_per_token", 0) > 0
          and e.get("decode_io_bound_tokens_per_s", 0) > 0, f"bench --expert-cache-gb --json: {out}")
    # The bound counts the misses' bytes only: reads of wrong guesses are part of every read, not of the misses;
    # taken-back guesses are some of the predicted ones.
    check(0 < e.get("decode_miss_bytes_per_token", 0) <= e.get("decode_disk_bytes_per_token", 0)
          and 0 <= e.get("decode_cancelled_per_token", -1) <= e.get("decode_predicted_per_token", -1),
          f"bench --expert-cache-gb --json (misses, cancelled guesses): {e}")
    out, _ = dsv4("bench", "--model", m, "--prompt", "4", "--gen", "1", "--reps", "1", "--expert-cache-gb", "0.0005",
                  timeout=600)
    check("expert cache hit rate" in out and "I/O bound" in out and "disk bandwidth" in out
          and "prediction hit rate" in out and "decode step, mean" in out and "score-routed" in out
          and "at once on average" in out and "of the head" in out, f"bench text: {out}")
    check(e.get("disk_probe_gbs", 0) > 0 and e.get("read_engine") in ("io_uring", "threads")
          and 0 <= e.get("decode_prediction_hit_rate", -1) <= 1, f"bench --expert-cache-gb --json (disk, engine): {e}")
    # Where a decode step goes: computing + waiting = the step; the wait split by layer kind adds up;
    # reads were in flight for a share of it (a cache of 6-expert budget misses on every token).
    step, comp, wait = e.get("decode_step_s", 0), e.get("decode_compute_s_per_token", -1), e.get("decode_wait_s_per_token", -1)
    wh, ws = e.get("decode_wait_hash_s_per_token", -1), e.get("decode_wait_score_s_per_token", -1)
    check(step > 0 and comp >= 0 and wait >= 0 and abs(comp + wait - step) <= 1e-6 + 1e-3 * step
          and wh >= 0 and ws >= 0 and abs(wh + ws - wait) <= 1e-9 + 1e-6 * wait
          and 0 < e.get("decode_disk_busy_fraction", 0) <= 1 and e.get("decode_disk_gbs", 0) > 0
          and e.get("decode_waits_per_token", -1) >= 0 and e.get("decode_tile_s_per_token", -1) >= 0
          and 1 <= e.get("decode_disk_mean_depth", 0) <= 8 and 0 <= e.get("decode_disk_full_fraction", -1) <= 1
          and 0 <= e.get("decode_disk_idle_in_head_s_per_token", -1) <= step,
          f"bench --expert-cache-gb --json (decode step): {e}")
    # DSV4_EXPERT_READER picks the read engine; another value is a one-line error.
    try:
        os.environ["DSV4_EXPERT_READER"] = "threads"
        out, _ = dsv4("bench", "--model", m, "--json", "--prompt", "4", "--gen", "1", "--reps", "1",
                      "--expert-cache-gb", "0.0005", timeout=600)
        check('"read_engine": "threads"' in out, f"DSV4_EXPERT_READER=threads: {out}")
        os.environ["DSV4_EXPERT_READER"] = "aio"
        _, err = dsv4("run", "--model", m, "-p", "x", "--expert-cache-gb", "0.0005", ok=False)
        check("DSV4_EXPERT_READER must be" in err, f"DSV4_EXPERT_READER=aio: {err}")
    finally:
        os.environ.pop("DSV4_EXPERT_READER", None)
    out, _ = dsv4("bench", "--model", m, "--prompt", "4", "--gen", "1", "--reps", "1", "--mmap", timeout=600)
    check("prefill (4 tokens)" in out and "of peak" in out and "of bandwidth" in out, f"bench text: {out}")
    bad_args("bench", [[], ["--model", m, "--reps", "0"], ["--model", m, "--threads", "-2"],
                       ["--model", m, "--prompt", "x"], ["--model", m, "--isa", "avx9"],
                       ["--model", m, "--context", "-1"], ["--model", f"{tmp}/none"], ["--model", m, "--jsn"]])


def check_step_phases(r, one, what):
    """A batch or verify step by phase: the experts' phases read what the step's expert count says,
    and the attention projections read their weights once per step whatever the rows (the same MB
    as one row's step)."""
    ph, ph1 = r.get("phases", {}), one.get("phases", {})
    experts_mb = sum(ph.get(n, {}).get("mb", 0) for n in ("routed experts", "shared expert"))
    read = r.get("expert_bytes_read_per_step", r.get("expert_bytes_read", 0))
    attn = ph.get("attention projections", {}).get("mb", 0)
    check(abs(experts_mb * 1e6 - read) <= 1e-6 * read + 1 and attn > 0
          and abs(attn - ph1.get("attention projections", {}).get("mb", 0)) <= 1e-6 * attn
          and ph.get("pool_regions", -1) >= 0 and ph.get("pool_wait_ms", -1) >= 0 and ph.get("cpu_ms", 0) > 0,
          f"{what}: {ph}")


def test_bench_passes(tmp, m):
    """--profile, --batch, --verify: the report's fields exist and agree with each other and with the
    model's shape (no timing is checked)."""
    cfg = json.load(open(f"{m}/config.json"))
    L, K, E = cfg["num_hidden_layers"], cfg["num_experts_per_tok"], cfg["n_routed_experts"]
    out, _ = dsv4("bench", "--model", m, "--json", "--prompt", "8", "--gen", "2", "--context", "16", "--reps", "1",
                  "--profile", "--batch", "1,2,4", "--verify", "3,2", timeout=600)
    try:
        j = json.loads(out)
    except json.JSONDecodeError:
        return fail(f"bench --profile --json: not JSON:\n{out}")
    p = j.get("profile", {})
    names = [ph.get("name") for ph in p.get("phases", [])]
    check(len(names) == 12 and {"attention projections", "routed experts", "shared expert", "head", "gate",
                                "mHC + norms"} <= set(names), f"bench --profile phases: {names}")
    mb = sum(ph.get("mb_per_token", 0) for ph in p.get("phases", []))
    # The kernels' count of what a step read (weights + KV) against the static per-token count
    # of weights (which also holds norm vectors and an embedding row): within 5 %.
    weights = p.get("bytes_per_token", 0) - p.get("kv_bytes_per_token", 0)
    check(abs(mb * 1e6 - p.get("bytes_per_token", 0)) <= 1e-6 * p.get("bytes_per_token", 1) + 1
          and abs(weights - j.get("decode_bytes_per_token", 0)) <= 0.05 * j.get("decode_bytes_per_token", 0)
          and p.get("experts_per_token") == L * K and p.get("pool_regions_per_token", 0) > 0
          and 0 <= p.get("pool_worker_chunk_share", -1) <= 1
          and p.get("cpu_ms_per_token", 0) > 0, f"bench --profile totals: {p}")
    # The profiled prefill: the same phases, per prompt token; the phases' exclusive times add up
    # to no more than the pass's wall time, and its products read each routed expert the prompt
    # touched (at most L·E per pass, at least L·K over the 8 tokens).
    pp = j.get("prefill_profile", {})
    pnames = [ph.get("name") for ph in pp.get("phases", [])]
    pms = sum(ph.get("ms_per_token", 0) for ph in pp.get("phases", []))
    check(pnames == names and 0 < pms <= pp.get("wall_ms_per_token", 0) * 1.001 + 1e-6
          and L * K / 8 <= pp.get("experts_per_token", 0) <= L * E / 8
          and pp.get("cpu_ms_per_token", 0) > 0, f"bench --profile prefill: {pp}")
    b = j.get("batch", [])
    check([r.get("sequences") for r in b] == [1, 2, 4], f"bench --batch rows: {b}")
    if len(b) == 3:
        u1 = b[0]["union_bytes_per_step"]
        check(b[0]["experts_per_step"] == L * K, f"bench --batch 1 experts: {b[0]}")
        for r in b:
            n = r["sequences"]
            # Each touched expert read once per step for all its rows: the kernels' bytes equal the
            # union's; the union grows with the rows but less than n copies of one row's bytes.
            check(r["expert_bytes_read_per_step"] == r["expert_union_bytes_per_step"]
                  and L * K <= r["experts_per_step"] <= min(n * L * K, L * E)
                  and (n == 1 or u1 < r["union_bytes_per_step"] < n * u1)
                  and r["bound_tokens_per_s"] > 0 and r["tokens_per_s"] > 0 and r["bound_fraction"] > 0,
                  f"bench --batch {n}: {r}")
            check_step_phases(r, b[0], f"bench --batch {n} phases")
    v = j.get("verify", [])
    check([r.get("draft") for r in v] == [1, 2, 3], f"bench --verify rows (1 added, sorted): {v}")
    if len(v) == 3:
        check(v[0]["bytes_ratio"] == 1 and v[0]["decode_step_ratio"] == 1, f"bench --verify 1: {v[0]}")
        for r in v:
            k = r["draft"]
            check(r["expert_bytes_read"] == r["expert_union_bytes"] and r["experts"] >= L * K
                  and (k == 1 or 1 < r["bytes_ratio"] < k), f"bench --verify {k}: {r}")
            check_step_phases(r, v[0], f"bench --verify {k} phases")
    out, _ = dsv4("bench", "--model", m, "--prompt", "4", "--gen", "1", "--reps", "1", "--profile", "--batch", "2",
                  "--verify", "2", timeout=600)
    check("decode step by phase" in out and "prefill of 4 tokens by phase" in out and "routed experts" in out
          and "concurrent sequences" in out
          and "verify forward" in out, f"bench --profile text: {out}")
    bad_args("bench", [["--model", m, "--batch", "0"], ["--model", m, "--batch", "2,x"], ["--model", m, "--verify", "-1"],
                       ["--model", m, "--verify", "1000"]])


def main():
    documented = {c: help_flags(c) for c in COMMANDS}
    top, _ = dsv4("tokenize", "--help")
    for bad in (["nosuch"], []):
        p = subprocess.run([DSV4, *bad], capture_output=True, timeout=60)
        lines = [l for l in p.stderr.decode().splitlines() if l.strip()]
        check(p.returncode != 0 and len(lines) == 1 and "error:" in lines[0], f"dsv4 {bad}: {p.stderr!r}")
    tmp = tempfile.mkdtemp(prefix="dsv4-cli-test-")
    def section(f, *args):  # a section that breaks off (say, on output that is not JSON) is one failure
        t0 = time.time()
        try:
            return f(tmp, *args)
        except Exception as e:  # noqa: BLE001
            fail(f"{f.__name__}: {e!r}")
        finally:
            print(f"{f.__name__}: {time.time() - t0:.1f} s", flush=True)

    try:
        section(test_parse_completion)
        m = section(test_make_model) or f"{tmp}/model"
        for f in (test_tokenizer, test_template, test_inspect, test_logits, test_run, test_chat, test_state,
                  test_bench, test_bench_passes, test_expert_parallel):
            section(f, m)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for c in COMMANDS:
        untested = sorted(documented[c] - used[c])
        check(not untested, f"dsv4 {c}: documented flags no case uses: {untested}")
    print(f"{len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
