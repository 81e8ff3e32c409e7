"""The generated modules and the constants read from them."""

import filecmp
import os
import subprocess
import sys

import grpc

import drover_driver
from drover_driver import protocol
from drover_driver.protocol import Feature, pb

from conftest import SDK_DIR, SOURCE_DIR


def test_generated_modules_match_proto(tmp_path):
    """Fails when the installed package was built from other .proto files
    than the checkout's: reinstall it (pip install ./driver-sdk/python)."""
    out = tmp_path / "gen"
    r = subprocess.run([sys.executable, os.path.join(SDK_DIR, "protogen.py"), str(out),
                        os.path.join(SOURCE_DIR, "proto")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    installed = os.path.join(os.path.dirname(drover_driver.__file__), "_proto")
    names = sorted(n for n in os.listdir(out) if n.endswith(".py"))
    assert names == sorted(n for n in os.listdir(installed) if n.endswith(".py"))
    match, mismatch, errors = filecmp.cmpfiles(out, installed, names, shallow=False)
    assert not mismatch and not errors, "stale generated modules %s: reinstall driver-sdk/python" % (mismatch + errors)


def test_features_come_from_the_descriptor():
    values = {v.name: v.number for v in pb.Feature.DESCRIPTOR.values if v.number}
    assert {"FEATURE_" + f.name: f.value for f in Feature} == values
    assert set(protocol.FEATURE_RPCS) | set(protocol.MARKERS) == set(Feature)


def test_every_rpc_is_identity_or_in_one_group():
    service = [m.name for m in pb.DESCRIPTOR.services_by_name["Compute"].methods]
    grouped = [r for rpcs in protocol.FEATURE_RPCS.values() for r in rpcs]
    assert len(grouped) == len(set(grouped))
    assert sorted(grouped + list(protocol.IDENTITY_RPCS)) == sorted(service)
    assert protocol.IDENTITY_RPCS == ("GetInfo", "GetFeatures", "ValidateConfig")
    assert protocol.FEATURE_RPCS[Feature.OFFERS] == ("GetOffers",)


def test_status_code_tables_read_from_compute_proto():
    codes = protocol.RPC_CODES
    assert set(codes) == set(protocol.IDENTITY_RPCS) | {r for rs in protocol.FEATURE_RPCS.values() for r in rs}
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes["CreateInstance"]
    assert grpc.StatusCode.RESOURCE_EXHAUSTED not in codes["GetOffers"]
    assert grpc.StatusCode.NOT_FOUND in codes["GetInstance"]
    # Terminate* never answers NOT_FOUND: an unknown id is OK.
    assert grpc.StatusCode.NOT_FOUND not in codes["TerminateInstance"]
    assert codes["GetInfo"] == {grpc.StatusCode.OK}
    for rpc, allowed in codes.items():
        assert grpc.StatusCode.OK in allowed, rpc


def test_protocol_version_and_services():
    assert protocol.PROTOCOL_VERSION == pb.PROTOCOL_VERSION_1
    assert protocol.COMPUTE_SERVICE == "drover.compute.v1.Compute"
    assert protocol.HEALTH_SERVICE == "grpc.health.v1.Health"
