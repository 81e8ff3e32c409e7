"""The shared table of broken configs (tests/fixtures/config-diagnostics.json)
through a C SDK driver and a Python SDK driver declaring the same fields:
both must give exactly the table's diagnostics (severity, field path,
summary), so the two SDKs answer the same mistake the same way."""

import json
import os

import pytest

from drover_driver.protocol import pb

from conftest import BUILD_DIR, SOURCE_DIR, script

TABLE = os.path.join(SOURCE_DIR, "tests", "fixtures", "config-diagnostics.json")
C_DRIVER = os.path.join(BUILD_DIR, "bin", "fixture-driver-config-diag")
CASES = json.load(open(TABLE))["cases"]


def diagnostics(driver, case):
    resp = driver.stub.ValidateConfig(pb.ValidateConfigRequest(
        config=pb.BackendConfig(config_json=case["config"], secrets=case["secrets"])), timeout=10)
    got = sorted((pb.Severity.Name(d.severity)[len("SEVERITY_"):], d.field_path, d.summary) for d in resp.diagnostics)
    assert resp.valid == (not any(s == "ERROR" for s, _, _ in got))
    return got


@pytest.fixture(scope="module")
def drivers(tmp_path_factory):
    from conftest import Driver

    if not os.access(C_DRIVER, os.X_OK):
        pytest.skip("%s not built (cmake --build build)" % C_DRIVER)
    started = [Driver([C_DRIVER], tmp_path_factory.mktemp("c")),
               Driver(script("config_diag"), tmp_path_factory.mktemp("py"))]
    yield started
    for d in started:
        d.close()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_same_diagnostics_as_the_c_sdk(drivers, case):
    c_driver, py_driver = drivers
    want = sorted(tuple(e) for e in case["expect"])
    assert diagnostics(c_driver, case) == want, "C SDK"
    assert diagnostics(py_driver, case) == want, "Python SDK"


def test_schemas_agree(drivers):
    c_info, py_info = (d.stub.GetInfo(pb.GetInfoRequest(), timeout=10) for d in drivers)
    for field in ("config_schema_json", "secrets_schema_json"):
        c, py = json.loads(getattr(c_info, field)), json.loads(getattr(py_info, field))
        for schema in (c, py):
            for prop in schema["properties"].values():
                prop.pop("description", None)  # the C fixture describes fewer fields
        assert py == c, field


def test_info_output_has_the_c_sdks_shape(drivers):
    import subprocess

    c = json.loads(subprocess.run([C_DRIVER, "--info"], capture_output=True, text=True, check=True).stdout)
    py = json.loads(subprocess.run(script("config_diag") + ["--info"], capture_output=True, text=True,
                                   check=True).stdout)
    assert list(py) == list(c)
    for key in ("type", "driver_version", "protocol_version", "features"):
        assert py[key] == c[key], key
