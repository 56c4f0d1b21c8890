"""pysandbox: run a program isolated in every namespace the kernel offers.

    from sandbox import Sandbox, load_profile
    result = Sandbox(load_profile("strict")).run(["python3", "x.py"], timeout=2)
    result.reason, result.exit_code, result.wall, result.cpu_user

Imports are lazy: `import sandbox` costs nothing until a name is used.
"""
__all__ = ["Sandbox", "SandboxProcess", "Result", "RunFailed", "ArgumentError", "load_profile", "SandboxError",
           "ProfileError", "SetupError"]
__version__ = "0.2.0"  # = pysandbox_common.VERSION (tests/test_pysandbox_cli.py)


def __getattr__(name):
    if name in ("Sandbox", "SandboxProcess", "Result", "RunFailed", "ArgumentError"):
        from . import runtime
        return getattr(runtime, name)
    if name == "load_profile":
        from .profile import load_profile
        return load_profile
    if name in ("SandboxError", "ProfileError", "SetupError"):
        from . import errors
        return getattr(errors, name)
    raise AttributeError(name)
