"""The OCI front-end's entry: a bundle's config.json read and validated into a ContainerPlan
(sandbox/oci/spec.py), then tightened by a pysandbox profile when one is asked for
(sandbox/oci/strict.py): by --profile (an engine's runtimeArgs) or by the annotation
org.pysandbox.profile."""
import os

from . import spec
from .errors import SpecError


def load(bundle, profile_name=""):
    """The plan for the bundle at `bundle` (its config.json), tightened by `profile_name`."""
    bundle = os.path.abspath(bundle)
    if not os.path.isdir(bundle):
        raise SpecError("bundle %s: not a directory" % bundle)
    config = spec.read_json(os.path.join(bundle, "config.json"), "config")
    annotations = config.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise SpecError("annotations: expected an object")
    profile_name = profile_name or annotations.get("org.pysandbox.profile", "")
    plan = spec.from_config(config, bundle)
    if profile_name:
        from . import strict
        plan = strict.tighten(plan, profile_name)
    return plan
