"""The process contract (drv_main's, driver-sdk/src/driver_main.c) and the
error mapping, on real driver processes over real sockets."""

import json
import os
import re
import signal
import subprocess
import time

import grpc
import pytest

from drover_driver.protocol import Feature, health_pb2, pb, pb_grpc

from conftest import SOURCE_DIR, script

FULL = script("full")
ALL_GROUPS = [Feature.OFFERS, Feature.CREATE_INSTANCE, Feature.PLACEMENT_GROUPS, Feature.VOLUMES, Feature.GATEWAYS,
              Feature.MULTINODE]


def run(args, timeout=20):
    return subprocess.run(FULL + args, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=timeout)


def config(**values):
    return pb.BackendConfig(config_json=json.dumps(values))


def create(driver, name, timeout=10):
    return driver.stub.CreateInstance(pb.CreateInstanceRequest(
        config=config(), instance=pb.InstanceConfiguration(name=name, idempotency_key="k")), timeout=timeout)


def failure(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


class TestCommandLine:
    def test_help(self):
        r = run(["--help"])
        assert r.returncode == 0
        for opt in ("--listen", "--tls-cert", "--client-ca", "--insecure", "--workers", "--grace-ms", "--info"):
            assert opt in r.stdout

    def test_version(self):
        r = run(["--version"])
        assert (r.returncode, r.stdout) == (0, "full 1.2.3 (drover protocol 1)\n")

    def test_info(self):
        r = run(["--info"])
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["features"] == ["OFFERS", "CREATE_INSTANCE", "PLACEMENT_GROUPS", "VOLUMES", "GATEWAYS", "MULTINODE"]
        assert info["config_schema"]["properties"]["no_volumes"] == {"type": "boolean", "default": False}

    def test_without_cookie(self):
        r = run([])
        assert r.returncode == 1
        assert "not meant to be run directly" in r.stderr and r.stdout == ""

    @pytest.mark.parametrize("args, message", [
        (["--frobnicate"], "--frobnicate"),
        (["--listen", "0.0.0.0:0"], "only allowed on loopback"),
        (["--listen", "nohost"], "HOST:PORT"),
        (["--tls-cert", "x.pem"], "--tls-cert needs --listen"),
        (["--listen", "127.0.0.1:0", "--tls-cert", "x.pem"], "missing --tls-key, --client-ca"),
        (["--workers", "0"], "--workers"),
    ])
    def test_bad_arguments_exit_2(self, args, message):
        r = run(args)
        assert r.returncode == 2
        assert message in r.stderr


class TestSpawned:
    def test_handshake_health_and_features(self, spawn, tmp_path):
        d = spawn(FULL)
        assert d.socket == os.path.join(str(tmp_path), "full.sock")
        assert d.health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        assert d.stub.GetInfo(pb.GetInfoRequest(), timeout=5).driver_version == "1.2.3"
        assert list(d.stub.GetFeatures(pb.GetFeaturesRequest(), timeout=5).features) == ALL_GROUPS
        narrowed = d.stub.GetFeatures(pb.GetFeaturesRequest(config=config(no_volumes=True)), timeout=5).features
        assert Feature.VOLUMES not in narrowed and Feature.OFFERS in narrowed
        code, msg = failure(lambda: d.stub.AttachVolume(pb.AttachVolumeRequest(config=config(no_volumes=True)),
                                                        timeout=5))
        assert code == grpc.StatusCode.UNIMPLEMENTED and "VOLUMES" in msg
        assert d.stub.AttachVolume(pb.AttachVolumeRequest(config=config()), timeout=5).device_name == "/dev/vdb"
        code, msg = failure(lambda: d.stub.GetFeatures(pb.GetFeaturesRequest(config=config(nope=1)), timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "/nope" in msg
        code, msg = failure(lambda: d.stub.GetOffers(pb.GetOffersRequest(config=config(latency_ms=-1)), timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "/latency_ms: value below minimum" in msg
        # A handler returning None answers the empty response of its RPC.
        d.stub.TerminateInstance(pb.TerminateInstanceRequest(config=config(), instance_id="i-1"), timeout=5)

    def test_error_mapping(self, spawn):
        d = spawn(FULL)
        assert failure(lambda: create(d, "nocap")) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "no H100 left in eu-1")
        assert failure(lambda: d.stub.GetInstance(pb.GetInstanceRequest(config=config(), instance_id="x"),
                                                  timeout=5)) == (grpc.StatusCode.NOT_FOUND, "no instance x")
        code, msg = failure(lambda: create(d, "wrongcode"))
        assert code == grpc.StatusCode.INTERNAL and "NOT_FOUND" in msg
        code, msg = failure(lambda: create(d, "boom"))
        assert code == grpc.StatusCode.INTERNAL
        assert msg == "CreateInstance failed: internal error in driver full (ValueError)"
        code, msg = failure(lambda: create(d, "badreturn"))
        assert code == grpc.StatusCode.INTERNAL and "TypeError" in msg
        code, msg = failure(lambda: create(d, "long"))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert len(msg.encode()) <= 2048 and msg.endswith("bytes cut)")
        code, msg = failure(lambda: create(d, "utf8"))
        assert len(msg.encode()) <= 2048 and msg.startswith("\u00e9\u00e9") and "\ufffd" not in msg
        rc, log = d.stop()
        assert rc == 0
        lines = [json.loads(line) for line in log.splitlines()]
        bug = [x for x in lines if "does not allow" in x["msg"]]
        assert bug and bug[0]["level"] == "error" and bug[0]["method"] == "CreateInstance"
        # The traceback goes to the log, not to the caller.
        tb = [x for x in lines if x["msg"] == "handler raised ValueError"]
        assert len(tb) == 1 and "the provider's SDK broke" in tb[0]["traceback"]
        assert "Traceback" in tb[0]["traceback"]

    def test_async_handler_and_its_cancellation(self, spawn):
        d = spawn(FULL)
        assert d.stub.GetOffers(pb.GetOffersRequest(config=config()), timeout=5).offers[0].instance_type == "t1"
        t0 = time.monotonic()
        code, _ = failure(lambda: d.stub.GetOffers(pb.GetOffersRequest(config=config(latency_ms=5000)), timeout=0.2))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        # The cancelled coroutine does not hold shutdown up for its 5 s.
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 4

    def test_sigterm_lets_a_call_in_flight_finish(self, spawn):
        d = spawn(FULL)
        fut = d.stub.CreateInstance.future(pb.CreateInstanceRequest(
            config=config(), instance=pb.InstanceConfiguration(name="sleep")), timeout=20)
        time.sleep(0.5)
        d.proc.send_signal(signal.SIGTERM)
        assert fut.result().data.instance_id == "i-1"
        assert d.proc.wait(timeout=10) == 0

    def test_stdin_eof_exits_quietly(self, spawn):
        d = spawn(FULL)
        d.stub.GetInfo(pb.GetInfoRequest(), timeout=5)
        rc, log = d.stop()
        assert rc == 0
        assert d.proc.stdout.read() == b""
        assert not os.path.exists(d.socket)
        msgs = [json.loads(line)["msg"] for line in log.splitlines()]
        assert msgs[0] == "serving" and msgs[-1] == "stopped"

    def test_partial_driver_refused_at_start(self, tmp_path):
        path = tmp_path / "half.py"
        path.write_text("import sys, drover_driver as dd\n"
                        "class Half(dd.Compute, dd.ComputeWithGateways):\n"
                        "    TYPE = 'half'\n"
                        "    def create_gateway(self, call, request): pass\n"
                        "sys.exit(dd.main(Half))\n")
        r = subprocess.run([FULL[0], str(path), "--info"], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert r.stderr.strip() == ("drover-driver-half: Half implements feature GATEWAYS only partly: it lacks "
                                    "terminate_gateway (a feature is all of create_gateway, terminate_gateway, or none)")


def _listen(args):
    p = subprocess.Popen(FULL + args, env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline().decode()
    m = re.match(r"^1\|1\|tcp\|(127\.0\.0\.1:\d+)\|grpc\n$", line)
    assert m, (line, p.stderr.read1(4096) if not m else "")
    return p, m.group(1)


def _stop(p):
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    for f in (p.stdout, p.stderr):
        f.close()


def test_listen_plain_on_loopback():
    p, addr = _listen(["--listen", "127.0.0.1:0"])
    try:
        with grpc.insecure_channel(addr) as ch:
            assert pb_grpc.ComputeStub(ch).GetInfo(pb.GetInfoRequest(), timeout=5).type == "full"
    finally:
        _stop(p)


def test_listen_mutual_tls(tmp_path):
    certs = tmp_path / "certs"
    r = subprocess.run([os.path.join(SOURCE_DIR, "scripts", "gen-certs.sh"), str(certs), "2"], capture_output=True)
    assert r.returncode == 0, r.stderr

    def pem(name):
        return (certs / name).read_bytes()

    p, addr = _listen(["--listen", "127.0.0.1:0", "--tls-cert", str(certs / "driver.pem"), "--tls-key",
                       str(certs / "driver-key.pem"), "--client-ca", str(certs / "ca.pem")])
    try:
        good = grpc.ssl_channel_credentials(pem("ca.pem"), pem("client-key.pem"), pem("client.pem"))
        with grpc.secure_channel(addr, good, options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
            assert pb_grpc.ComputeStub(ch).GetInfo(pb.GetInfoRequest(), timeout=5).type == "full"
        # Without a client certificate the driver refuses the connection.
        anonymous = grpc.ssl_channel_credentials(pem("ca.pem"))
        with grpc.secure_channel(addr, anonymous, options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
            with pytest.raises(grpc.RpcError) as e:
                pb_grpc.ComputeStub(ch).GetInfo(pb.GetInfoRequest(), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        _stop(p)
