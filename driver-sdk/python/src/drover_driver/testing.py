"""Runs the drover-conformance harness against a driver from pytest.

    from drover_driver.testing import run_conformance

    def test_conformance():
        run_conformance("drover-driver-acmecloud", config="conformance.json")

The harness is a program of the drover build (build/bin/drover-conformance).
It is looked up in $DROVER_CONFORMANCE, then on PATH; when it is absent the
test is skipped with a reason that says how to point at it."""

import os
import shutil
import subprocess
import sys

__all__ = ["find_conformance", "find_driver", "run_conformance"]


def find_conformance():
    """Path of drover-conformance, or None."""
    env = os.environ.get("DROVER_CONFORMANCE")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("drover-conformance")


def find_driver(name):
    """A driver executable by path, or by name next to this interpreter (the
    bin/ of the venv it was installed in), then on PATH."""
    if os.sep in name:
        return os.path.abspath(name)
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which(name)


def run_conformance(driver, config=None, args=(), timeout=240):
    """Runs the harness against `driver` (a path or an executable name) with
    an optional config file ({"config": ..., "secrets": ..., "params": ...})
    and extra harness arguments. Fails the test with the harness's report
    when a check fails; returns the report otherwise."""
    import pytest

    harness = find_conformance()
    if harness is None:
        pytest.skip("drover-conformance not found: set DROVER_CONFORMANCE to its path (a drover build has it in "
                    "build/bin/) or put it on PATH")
    path = find_driver(driver)
    if path is None:
        pytest.fail("driver %r not found beside %s nor on PATH: pip install your driver package first" % (
            driver, sys.executable))
    cmd = [harness] + list(args)
    if config is not None:
        cmd += ["--config", os.path.abspath(config)]
    cmd += ["--driver", path]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    report = r.stdout + r.stderr
    if r.returncode != 0:
        pytest.fail("drover-conformance exited %d:\n%s" % (r.returncode, report), pytrace=False)
    return report
