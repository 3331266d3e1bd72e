"""Run every fuzz target for a share of a fixed time budget and report what they did.

    python fuzz/run.py [--seconds 600] [http1 uwsgi ini]

Each target (fuzz/fuzz_<name>.py, atheris/libFuzzer) runs for seconds / number-of-targets,
one after the other (the machine's cores are the test suite's). Inputs found to reach new
code are kept in var/fuzz/corpus/<name> (so the next run starts where this one stopped) on
top of the checked-in seeds in fuzz/seeds/<name>; a finding (crash, unexpected exception,
split-dependent answer, timeout) is written to var/fuzz/artifacts/<name>/ and its log tail is
printed. Exit status 1 when any target found something, 0 when all ran clean.

To replay a finding: python fuzz/fuzz_<name>.py var/fuzz/artifacts/<name>/crash-...
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(ROOT, "var", "fuzz")
TARGETS = ("http1", "uwsgi", "ini")
MAX_LEN = {"http1": 4096, "uwsgi": 4096, "ini": 2048}
PER_INPUT_TIMEOUT = 10  # seconds: an input slower than this is reported as a hang
_runs = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")
_done = re.compile(rb"Done (\d+) runs in (\d+) second")


def run_target(name: str, seconds: int) -> tuple:
    """(ok, executions, log path) after fuzzing `name` for about `seconds`."""
    corpus = os.path.join(WORK, "corpus", name)
    artifacts = os.path.join(WORK, "artifacts", name)
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    log_path = os.path.join(WORK, f"{name}.log")
    command = [
        sys.executable,
        os.path.join(HERE, f"fuzz_{name}.py"),
        corpus,
        os.path.join(HERE, "seeds", name),
        f"-max_total_time={seconds}",
        f"-timeout={PER_INPUT_TIMEOUT}",
        f"-max_len={MAX_LEN[name]}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}{os.sep}",
    ]
    dictionary = os.path.join(HERE, f"{name}.dict")
    if os.path.exists(dictionary):
        command.append(f"-dict={dictionary}")
    with open(log_path, "wb") as log:
        # stdin closed: nothing under test may wait for a terminal. The extra minute covers
        # loading the corpus; a target still running then is itself a hang.
        code = subprocess.call(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=seconds + 60
        )
    with open(log_path, "rb") as log:
        text = log.read()
    found = _runs.findall(text) or [m[0] for m in _done.findall(text)]
    executions = int(found[-1]) if found else 0
    return code == 0, executions, log_path, text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 600)))
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default all)")
    args = parser.parse_args(argv)
    args.targets = args.targets or list(TARGETS)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    share = max(1, args.seconds // len(args.targets))
    failures = 0
    for name in args.targets:
        started = time.monotonic()
        ok, executions, log_path, text = run_target(name, share)
        elapsed = time.monotonic() - started
        verdict = "clean" if ok else "FINDING"
        print(
            f"fuzz {name:6} {verdict:8} {executions:>10,} executions in {elapsed:5.0f} s"
            f"  (log: {os.path.relpath(log_path, ROOT)})",
            flush=True,
        )
        if not ok:
            failures += 1
            tail = text.decode("utf-8", "replace").splitlines()[-40:]
            print("\n".join("    " + line for line in tail), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
