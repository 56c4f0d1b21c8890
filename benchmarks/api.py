#!/usr/bin/env python3
"""API latency: a prepared `Sandbox(load_profile("strict")).run(CMD)` next to
`subprocess.run(["bwrap", "--unshare-all", "--die-with-parent", "--new-session", ...] + CMD)`
from the same interpreter, interleaved run by run (a change of the machine's load affects
both alike), for /bin/true and for `python3 -I -S -c pass`. Medians, p90 and the ratio;
with --executors also the Python stages (PYSANDBOX_STAGER="") for the before/after profile.

    sudo /opt/pysandbox/venv/bin/python benchmarks/api.py [-n 40] [--executors] [--json FILE]

Run it with the interpreter of the install to measure (its venv's python). No timing is
asserted anywhere.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from throughput import BWRAP

COMMANDS = {"/bin/true": ["/bin/true"], "python3 -I -S -c pass": ["/usr/bin/python3", "-I", "-S", "-c", "pass"]}


def prepared(executor):
    from sandbox import Sandbox, load_profile
    box = Sandbox(load_profile("strict"), executor="python" if executor == "python" else None)
    box.plan()
    if executor == "stager" and box.stager_reason:
        sys.exit("api.py: the stager does not run strict here: %s" % box.stager_reason)
    return box


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=40)
    parser.add_argument("--executors", action="store_true", help="also the Python stages (before the stager)")
    parser.add_argument("--json")
    args = parser.parse_args()
    boxes = {"pysandbox strict": prepared("stager")}
    if args.executors:
        boxes["pysandbox strict, Python stages"] = prepared("python")
    out = {}
    for label, argv in COMMANDS.items():
        samples = {name: [] for name in list(boxes) + ["bubblewrap"]}
        for box in boxes.values():  # warm: page cache, the first cgroups of the pool
            box.run(argv)
        subprocess.run(BWRAP + argv, check=True)
        for i in range(args.runs):
            order = list(boxes.items()) + [("bubblewrap", None)]
            if i % 2:
                order.reverse()
            for name, box in order:
                start = time.perf_counter()
                if box is None:
                    done = subprocess.run(BWRAP + argv)
                    code = done.returncode
                else:
                    code = box.run(argv).exit_code
                samples[name].append(time.perf_counter() - start)
                if code != 0:
                    sys.exit("api.py: %s exited %d" % (name, code))
        bwrap = statistics.median(samples["bubblewrap"])
        print("%s (%d runs each, interleaved)" % (label, args.runs))
        print("  %-34s %9s %9s %12s" % ("", "median ms", "p90 ms", "/ bubblewrap"))
        for name, values in samples.items():
            med = statistics.median(values)
            p90 = sorted(values)[max(0, int(len(values) * 0.9) - 1)]
            print("  %-34s %9.2f %9.2f %12.2f" % (name, med * 1000, p90 * 1000, med / bwrap))
            out.setdefault(label, {})[name] = {"median_ms": med * 1000, "p90_ms": p90 * 1000, "ratio": med / bwrap}
    for box in boxes.values():
        box.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
