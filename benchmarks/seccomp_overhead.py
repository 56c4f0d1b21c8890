"""Cost of our seccomp filters per syscall, against no filter and Docker's default profile.

For each variant a child process (a tiny C program compiled here with gcc) installs the filter
and times a loop of raw syscalls: getpid (no argument checks; the kernel's action cache answers
constant-allow syscalls without running the filter), personality(0xffffffff) and ioctl(-1, FIONREAD)
(argument-checked in our profiles). Medians of several rounds; ratios against no filter.
The last column is the filter's install (seccomp(2) itself), which every run pays once. Also:
a cold compile of the strict policy against a warm cache load. The "strict before" row is
strict as of --before (a git revision), compiled as the compiler did then (libseccomp judged the
argument rules), so one run shows before and after.

    python benchmarks/seccomp_overhead.py [--loops N] [--rounds R] [--before REV]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from sandbox import seccomp  # noqa: E402

C_SOURCE = r"""
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }

int main(int argc, char **argv) {
    long loops = atol(argv[2]);
    double installed = 0;
    if (argv[1][0]) {
        static char buf[65536];
        FILE *f = fopen(argv[1], "rb");
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        struct sock_fprog prog = { .len = n / 8, .filter = (struct sock_filter *)buf };
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
            perror("prctl"); return 1;
        }
        /* what every run pays once: the kernel checks, converts, JITs and pre-evaluates */
        double before = now();
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
            perror("seccomp"); return 1;
        }
        installed = now() - before;
    }
    double t0 = now();
    for (long i = 0; i < loops; i++) syscall(SYS_getpid);
    double t1 = now();
    for (long i = 0; i < loops; i++) syscall(SYS_personality, 0xffffffffUL);
    double t2 = now();
    for (long i = 0; i < loops; i++) syscall(SYS_ioctl, -1, 0x541B, 0);
    double t3 = now();
    printf("%.1f %.1f %.1f %.1f\n", (t1 - t0) / loops, (t2 - t1) / loops, (t3 - t2) / loops, installed / 1000);
    return 0;
}
"""


# Docker's default profile as Debian's golang-github-docker-docker-dev ships it (setup installs it)
DOCKER_DEFAULT = "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"


def load(name):
    with open(os.path.join(REPO, "profiles", name + ".toml"), "rb") as f:
        return seccomp.validate_section(tomllib.load(f)["seccomp"])


def docker_policy():
    return seccomp.validate_section({"import": DOCKER_DEFAULT}) if os.path.isfile(DOCKER_DEFAULT) else None


def before_policy(revision):
    """strict as of `revision` (git), compiled the way the compiler did then: argument rules
    judged by libseccomp's tree and chains, only refusals in our prefix."""
    try:
        text = subprocess.run(["git", "-C", REPO, "show", "%s:profiles/strict.toml" % revision], check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return seccomp.validate_section(tomllib.loads(text)["seccomp"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=300000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="min is steadier on a loaded machine (noise only ever adds time)")
    parser.add_argument("--before", default="8a80994",
                        help="git revision whose strict profile and compiler are the 'before' row")
    options = parser.parse_args()
    # One CPU for every variant: migrations between cores are the largest noise source here.
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    except OSError:
        pass
    work = tempfile.mkdtemp(prefix="pysandbox-bench-")
    try:
        source = os.path.join(work, "loop.c")
        binary = os.path.join(work, "loop")
        with open(source, "w") as f:
            f.write(C_SOURCE)
        subprocess.run(["gcc", "-O2", "-o", binary, source], check=True)
        caps = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")
        variants = [("no filter", None), ("strict", load("strict")), ("strict, libseccomp's tree", load("strict")),
                    ("default", load("default"))]
        before = before_policy(options.before)
        if before:
            variants.insert(2, ("strict before (%s)" % options.before, before))
        docker = docker_policy()
        if docker:
            variants.append(("docker default (imported)", docker))
        files = {}
        for label, policy in variants:
            if policy is None:
                files[label] = ("", 0)
                continue
            if label.startswith("strict before"):
                bpf = seccomp.compile_uncached(policy, caps, own_arguments=False)
            elif label.endswith("libseccomp's tree"):
                # the prefix as now, the rest libseccomp's (before the range search, stop 20)
                bpf = seccomp.compile_uncached(policy, caps, own_tail=False)
            else:
                bpf = seccomp.compile_policy(policy, caps, cache_dir=os.path.join(work, "cache"))
            path = os.path.join(work, "%d.bpf" % len(files))
            with open(path, "wb") as f:
                f.write(bpf)
            files[label] = (path, len(bpf) // 8)
        samples = {label: [] for label, _ in variants}
        for _ in range(options.rounds):  # interleaved, so drift hits every variant alike
            for label, _ in variants:
                out = subprocess.run([binary, files[label][0], str(options.loops)], check=True,
                                     capture_output=True, text=True).stdout.split()
                samples[label].append([float(v) for v in out])
        pick = statistics.median if options.stat == "median" else min
        base = [pick(s[i] for s in samples["no filter"]) for i in range(3)]
        print("seccomp overhead, ns per syscall (%s of %d rounds x %d calls)" % (options.stat, options.rounds,
                                                                                  options.loops))
        print("%-30s %6s %10s %7s %14s %7s %12s %7s %11s" % ("variant", "insns", "getpid", "ratio", "personality(q)",
                                                              "ratio", "ioctl", "ratio", "install us"))
        for label, _ in variants:
            med = [pick(s[i] for s in samples[label]) for i in range(4)]
            print("%-30s %6d %10.1f %6.2fx %14.1f %6.2fx %12.1f %6.2fx %11.1f" % (
                label, files[label][1], med[0], med[0] / base[0], med[1], med[1] / base[1], med[2], med[2] / base[2],
                med[3]))

        # cold compile (pyseccomp imported fresh, no cache) vs warm (cache hit, no pyseccomp)
        code = ("import time,sys,tomllib; t=time.perf_counter(); sys.path.insert(0,%r); from sandbox import seccomp;"
                "p=seccomp.validate_section(tomllib.load(open(%r,'rb'))['seccomp']);"
                "seccomp.compile_policy(p, cache_dir=%r); print((time.perf_counter()-t)*1000,"
                "seccomp.stats['compiles'], 'pyseccomp' in sys.modules)")
        cold, warm = [], []
        for i in range(5):
            cache = os.path.join(work, "cc%d" % i)
            args = [sys.executable, "-I", "-c", code % (REPO, os.path.join(REPO, "profiles", "strict.toml"), cache)]
            out = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()
            assert out[1] == "1"
            cold.append(float(out[0]))
            out = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()
            assert out[1:] == ["0", "False"], out
            warm.append(float(out[0]))
        print()
        print("strict policy, validate + compile_policy in a fresh interpreter (median of 5):")
        print("  cold (pyseccomp + libseccomp compile, write cache): %7.2f ms" % statistics.median(cold))
        print("  warm (cache hit, pyseccomp not imported):          %7.2f ms" % statistics.median(warm))
        print("  ratio cold/warm: %.1fx" % (statistics.median(cold) / statistics.median(warm)))
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", work])


if __name__ == "__main__":
    main()
