"""The entry of the cloned PID 1.

PID 1 is born by clone() inside the new user and pid namespaces and runs the "pid1"
rows of stages.CHILD_STAGES; its "fork" stage forks the command, which runs the
"command" rows and execs. PID 1 then execs the small C init (sandbox/init.c) or
stays as the Python init (sandbox/pyinit.py): reaps zombies, forwards signals, reports
the command's wait status. Messages go to the supervisor on the channel (sandbox/channel.py).
"""
from . import native, stages
from .stages import FORWARDED_SIGNALS  # noqa: F401 - part of this module's interface


def pid1_main(plan, launch):
    """Entry of the cloned child. Never returns."""
    stages.run(stages.PID1_STAGES, plan, launch)
    native.exit(0)
