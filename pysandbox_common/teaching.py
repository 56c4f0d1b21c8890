"""Which `pysandbox lab` lesson shows a gap the audit reports: `audit explain ID` points a
student at the lab where the gap is opened and closed for real."""

# audit check id -> the lab's layer whose "off" state makes that check fail
LAB_OF_CHECK = {
    "ns-user-host": "user", "uid0-host": "user",
    "ns-pid-host": "pid",
    "proc-masks-missing": "mount",
    "ns-net-host": "net",
    "caps-nondefault": "capabilities", "cap-sys-admin": "capabilities", "cap-net-admin": "capabilities",
    "cap-net-raw": "capabilities", "cap-dac-override": "capabilities", "cap-dac-read-search": "capabilities",
    "cap-sys-ptrace": "capabilities", "cap-sys-module": "capabilities", "cap-bpf": "capabilities",
    "nnp-off": "no_new_privs",
    "seccomp-off": "seccomp", "userns-create": "seccomp", "keyring": "seccomp",
    "limits-pids-missing": "cgroup", "limits-memory-missing": "cgroup", "limits-cpu-missing": "cgroup",
}
