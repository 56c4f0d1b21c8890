"""--profile strict for engine containers: placeholder until the strict layers land."""
from .spec import SpecError


def tighten(plan, profile_name):
    raise SpecError("--profile %s: not available yet" % profile_name)
