import os
import sys

# Tests import the package as installed (setup.sh installs it into the venv that runs
# pytest); from a source checkout without an install, fall back to the tree itself.
try:
    import sandbox  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
