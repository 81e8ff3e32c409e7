"""The entry point of a driver package installed into a Python without
grpcio: it must fail with one line naming that interpreter and the fix, not
with a traceback ending in "No module named 'grpc'"."""

import os
import subprocess
import sys

import pytest

from drover_driver.scaffold import ScaffoldError, new_project

from conftest import SDK_DIR


def test_python_without_grpcio_fails_with_one_line(tmp_path):
    venv = tmp_path / "bare"
    # No --system-site-packages: this venv has no grpcio and no protobuf.
    r = subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot make a venv: %s" % r.stderr.strip())
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import grpc"], capture_output=True).returncode != 0
    new_project("nogrpc", str(tmp_path / "nogrpc"))
    # Wheels built by this interpreter (which has setuptools and wheel),
    # installed into the bare venv without their dependencies.
    env = dict(os.environ, DROVER_PY_BUILD_DIR=str(tmp_path / "build"))
    wheels = tmp_path / "wheels"
    for src in (SDK_DIR, str(tmp_path / "nogrpc")):
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-index", "--no-build-isolation", "--no-deps",
                            "--disable-pip-version-check", "-w", str(wheels), src], capture_output=True, text=True,
                           env=env, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
    r = subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--disable-pip-version-check"]
                       + [str(w) for w in wheels.iterdir()], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(venv / "bin" / "drover-driver-nogrpc"), "--version"], capture_output=True, text=True,
                       env={})
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert python in lines[0] and "python3-grpcio" in lines[0] and "--system-site-packages" in lines[0]


def test_scaffold_refuses_bad_names_and_overwrites(tmp_path):
    for bad in ("Acme", "9lives", "a_b", "", "a" * 70):
        with pytest.raises(ScaffoldError):
            new_project(bad, str(tmp_path / "x"))
    new_project("acme", str(tmp_path / "acme"))
    with pytest.raises(ScaffoldError, match="not empty"):
        new_project("acme", str(tmp_path / "acme"))
    r = subprocess.run([sys.executable, "-m", "drover_driver", "new", "Bad"], capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode == 1 and "lower-case" in r.stderr


def test_scaffolded_driver_serves(tmp_path, spawn):
    """The scaffold's driver runs as written (its conformance run is in
    tests/integration/server/test_python_sdk_venv.sh, after pip install)."""
    where = new_project("acme-cloud", str(tmp_path / "p"))
    driver = os.path.join(where, "src", "drover_acme_cloud", "driver.py")
    d = spawn([sys.executable, "-c", "import runpy, sys; sys.path.insert(0, %r); "
               "sys.exit(runpy.run_path(%r)['main']())" % (os.path.dirname(driver), driver)])
    from drover_driver.protocol import pb

    offers = d.stub.GetOffers(pb.GetOffersRequest(config=pb.BackendConfig(config_json="{}")), timeout=5).offers
    assert {o.region for o in offers} == {"acme-cloud-east-1", "acme-cloud-west-1"}
    v = d.stub.ValidateConfig(pb.ValidateConfigRequest(config=pb.BackendConfig(config_json='{"regions": ["mars"]}')),
                              timeout=5)
    assert [(x.field_path, x.summary) for x in v.diagnostics] == [("/regions/0", "unknown region")]
