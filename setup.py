"""Build step of the package: the sandbox's PID 1 (sandbox/init.c) and the compiled child
(sandbox/stager.c, which includes the init), compiled into it.

Everything else is declared in pyproject.toml. The runtime execs `sandbox/pysandbox-init`
once the command runs (a few hundred KiB per idle sandbox instead of a Python
interpreter, and about 90 ms less per start than the Python init), and starts
`sandbox/pysandbox-stage` to run the child's stages from a compiled plan (sandbox/stager.py);
so `pip install .` and the wheel must carry both, compiled. They are linked statically
because they also run as PID 1 inside `--rootfs` images, whose libc may differ from the
host's or be absent (and a static program starts without the dynamic loader's work).
The wheel is therefore a platform wheel (py3-none-linux_<arch>): the binary does not
depend on the Python version, only on the machine.
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:  # setuptools >= 70 carries bdist_wheel itself; before that it lives in `wheel`
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover - depends on the build environment
    from wheel.bdist_wheel import bdist_wheel

# (source, binary, optimisation): the init is small and idle; the stager runs every start
PROGRAMS = ((os.path.join("sandbox", "init.c"), "pysandbox-init", "-Os"),
            (os.path.join("sandbox", "stager.c"), "pysandbox-stage", "-O2"))


class BuildWithInit(build_py):
    """build_py, then `cc -static sandbox/<program>.c -o <build>/sandbox/<binary>` for each program."""

    def run(self):
        super().run()
        compiler = os.environ.get("CC", "gcc")
        if shutil.which(compiler) is None:
            raise SystemExit("setup.py: %s not found: the sandbox's init and stager (sandbox/*.c) are compiled at "
                             "install time; on Debian: apt-get install gcc libc6-dev" % compiler)
        for source, binary, optimise in PROGRAMS:
            target = os.path.join(self.build_lib, "sandbox", binary)
            self.mkpath(os.path.dirname(target))
            command = [compiler, "-static", optimise, "-Wall", "-o", target, source]
            self.announce(" ".join(command), level=2)
            try:
                subprocess.run(command, check=True)
            except subprocess.CalledProcessError as e:
                raise SystemExit("setup.py: compiling %s failed (exit %d); a static link needs libc6-dev"
                                 % (source, e.returncode)) from None
            os.chmod(target, 0o755)


class PlatformWheel(bdist_wheel):
    """The wheel holds a machine binary: tag it for the platform, not for the Python ABI."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _python, _abi, platform = super().get_tag()
        return "py3", "none", platform


class MachineDistribution(Distribution):
    """Has machine code: built into the platform directories (build/lib.<platform>, the
    wheel's root is platlib), like a distribution with C extensions."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithInit, "bdist_wheel": PlatformWheel}, distclass=MachineDistribution)
