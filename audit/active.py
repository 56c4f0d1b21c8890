"""placeholder"""
def run_probes(pid):
    return {}
