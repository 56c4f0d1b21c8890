"""The five capability sets of a container process, exactly as its spec gives them (the kernel's
rules that fix the order of the steps: sandbox/caps.py's docstring)."""
from ..errors import SetupError


def apply(sets):
    """The five sets exactly as given (the kernel's rules: sandbox/caps.py's docstring)."""
    from .. import caps
    capng = caps.backend()
    have = caps.current()
    numbers = {name: caps.numbers(values) for name, values in sets.items()}

    def step(select, what):
        if capng.capng_apply(select) != 0:
            raise SetupError("capabilities", capng.errno() or 1, "%s refused" % what)

    # CAP_SETPCAP must be effective to cut the bounding set: raise effective to permitted first.
    raise_effective(capng, have)
    capng.capng_clear(caps.CAPNG_SELECT_ALL)
    step(caps.CAPNG_SELECT_AMBIENT, "clearing ambient")
    for number in numbers["bounding"]:
        capng.capng_update(caps.CAPNG_ADD, caps.CAPNG_BOUNDING_SET, number)
    step(caps.CAPNG_SELECT_BOUNDS, "bounding set")
    capng.capng_clear(caps.CAPNG_SELECT_ALL)
    for kind, flag in (("effective", caps.CAPNG_EFFECTIVE), ("permitted", caps.CAPNG_PERMITTED),
                       ("inheritable", caps.CAPNG_INHERITABLE)):
        for number in numbers[kind]:
            capng.capng_update(caps.CAPNG_ADD, flag, number)
    step(caps.CAPNG_SELECT_CAPS, "capset")
    warnings = []
    if numbers["ambient"]:
        # The kernel raises an ambient capability only if it is permitted and inheritable. runc's
        # own `runc spec` lists ambient ones without inheritable and runs (they mean nothing to
        # uid 0): those are left out with a warning, as runc does, never silently.
        lacking = set(numbers["ambient"]) - (set(numbers["permitted"]) & set(numbers["inheritable"]))
        if lacking:
            warnings.append("process.capabilities.ambient: %s not raised (not in both permitted and "
                            "inheritable)" % ", ".join(sorted(caps.names(sum(1 << n for n in lacking)))))
            numbers["ambient"] = sorted(set(numbers["ambient"]) - lacking)
    if numbers["ambient"]:
        for number in numbers["ambient"]:
            capng.capng_update(caps.CAPNG_ADD, caps.CAPNG_AMBIENT, number)
        step(caps.CAPNG_SELECT_AMBIENT, "ambient set")
    now = caps.current()
    for key, kind in (("CapBnd", "bounding"), ("CapEff", "effective"), ("CapPrm", "permitted"),
                      ("CapInh", "inheritable"), ("CapAmb", "ambient")):
        want = sum(1 << n for n in numbers[kind])
        if now[key] != want:
            raise SetupError("capabilities", 1, "capabilities: %s is %#x after setup, expected %#x"
                             % (kind, now[key], want))
    return warnings


def raise_effective(capng=None, have=None):
    """effective := permitted (capset may raise effective within permitted)."""
    from .. import caps
    from pysandbox_common.capnames import last_cap
    capng = capng or caps.backend()
    have = have or caps.current()
    capng.capng_clear(caps.CAPNG_SELECT_ALL)
    for number in range(last_cap() + 1):
        if have["CapPrm"] >> number & 1:
            capng.capng_update(caps.CAPNG_ADD, caps.CAPNG_EFFECTIVE | caps.CAPNG_PERMITTED, number)
        if have["CapInh"] >> number & 1:
            capng.capng_update(caps.CAPNG_ADD, caps.CAPNG_INHERITABLE, number)
    if capng.capng_apply(caps.CAPNG_SELECT_CAPS) != 0:
        raise SetupError("capabilities", capng.errno() or 1, "capabilities: raising effective refused")
