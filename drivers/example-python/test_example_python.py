"""Quick checks of drover-driver-example-python through its launcher: the
command line, the handshake, a few real RPCs over its unix socket, and both
ways of stopping it. The full protocol proof is the conformance harness.

usage: test_example_python.py LAUNCHER GEN_DIR
"""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

LAUNCHER = sys.argv[1]
sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
del sys.argv[1:3]

import grpc  # noqa: E402

import compute_pb2 as pb  # noqa: E402
import drover_driver as dd  # noqa: E402
import compute_pb2_grpc as pb_grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402

COOKIE = {"DROVER_MAGIC_COOKIE": "6b1d4c0e-drover-driver-v1"}
HANDSHAKE = re.compile(r"^1\|1\|unix\|(/[^|]+)\|grpc\n$")


def run(args, env=None, timeout=20):
    e = {"PATH": "/usr/bin:/bin"}
    e.update(env or {})
    return subprocess.run([LAUNCHER] + args, env=e, capture_output=True, text=True, timeout=timeout)


class Spawned:
    """The driver started the way droverd starts it: cookie, socket dir, stdin pipe."""

    def __init__(self, sock_dir):
        env = {"PATH": "/usr/bin:/bin", "DROVER_SOCKET_DIR": sock_dir}
        env.update(COOKIE)
        self.proc = subprocess.Popen([LAUNCHER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.line = self.proc.stdout.readline().decode()
        m = HANDSHAKE.match(self.line)
        self.socket = m.group(1) if m else None
        self.channel = None

    def stub(self):
        self.channel = grpc.insecure_channel("unix:" + self.socket,
                                             options=[("grpc.max_receive_message_length", 64 << 20)])
        return pb_grpc.ComputeStub(self.channel)

    def close(self):
        if self.channel:
            self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.stderr.close()


class CommandLine(unittest.TestCase):
    def test_help(self):
        r = run(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("usage:", r.stdout)
        self.assertIn("--listen", r.stdout)

    def test_version(self):
        r = run(["--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^drover-driver-example-python \d+\.\d+\.\d+ \(protocol 1\)\n$")

    def test_info_is_json_with_schema(self):
        r = run(["--info"])
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual(info["type"], "example-python")
        self.assertEqual(info["features"], ["OFFERS"])
        self.assertEqual(info["config_schema"]["type"], "object")
        self.assertIn("synthetic_offers", info["config_schema"]["properties"])

    def test_without_cookie_explains_and_exits_1(self):
        r = run([])
        self.assertEqual(r.returncode, 1)
        self.assertIn("DROVER_MAGIC_COOKIE", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_bad_argument_is_named(self):
        r = run(["--frobnicate"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--frobnicate", r.stderr)

    def test_plain_tcp_off_loopback_refused(self):
        r = run(["--listen", "0.0.0.0:0"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("loopback", r.stderr)

    def test_half_tls_names_missing_flag(self):
        r = run(["--listen", "127.0.0.1:0", "--tls-cert", "x.pem"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--client-ca", r.stderr)


class ConfigChecks(unittest.TestCase):
    """The shared module's schema checks, for field kinds the example does not declare."""

    FIELDS = [dd.Field("zone", dd.STRING, required=True), dd.Field("size", dd.NUMBER, minimum=1, maximum=8),
              dd.Field("mode", dd.STRING, enum=["a", "b"]), dd.Field("token", dd.STRING, secret=True, required=True)]

    def check(self, text, secrets=None):
        diags = dd.Diagnostics()
        dd.check_config(self.FIELDS, pb.BackendConfig(config_json=text, secrets=secrets or {}), diags)
        return {d.field_path: d.summary for d in diags.items}

    def test_missing_required_field_and_secret(self):
        self.assertEqual(self.check("{}"), {"/zone": "missing required field",
                                            "/secrets/token": "missing required secret"})

    def test_ranges_enums_and_escaping(self):
        got = self.check('{"zone": "z", "size": 9, "mode": "c", "a/b~": true}', {"token": "t", "x": "y"})
        self.assertEqual(got, {"/size": "value too large", "/mode": "value not allowed",
                               "/a~1b~0": "unknown field", "/secrets/x": "unknown secret"})

    def test_bool_is_not_a_number(self):
        self.assertEqual(self.check('{"zone": "z", "size": true}', {"token": "t"}), {"/size": "wrong type"})

    def test_partial_feature_group_is_refused(self):
        class Half(dd.Provider):
            def create_instance(self, call, request):
                pass

        with self.assertRaises(ValueError) as cm:
            dd.derive_features(Half())
        self.assertIn("terminate_instance", str(cm.exception))


class SpawnedDriver(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.drv = Spawned(self.dir.name)
        self.assertIsNotNone(self.drv.socket, "bad handshake line %r" % self.drv.line)

    def tearDown(self):
        self.drv.close()
        self.dir.cleanup()

    def test_handshake_names_a_socket_in_the_socket_dir(self):
        self.assertEqual(os.path.dirname(self.drv.socket), os.path.realpath(self.dir.name))
        self.assertTrue(stat.S_ISSOCK(os.stat(self.drv.socket).st_mode))

    def test_rpcs(self):
        stub = self.drv.stub()
        health = health_pb2_grpc.HealthStub(self.drv.channel)
        self.assertEqual(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status,
                         health_pb2.HealthCheckResponse.SERVING)

        info = stub.GetInfo(pb.GetInfoRequest(), timeout=5)
        self.assertEqual((info.type, info.protocol_version), ("example-python", pb.PROTOCOL_VERSION_1))
        self.assertEqual(json.loads(info.config_schema_json)["type"], "object")

        feats = stub.GetFeatures(pb.GetFeaturesRequest(), timeout=5)
        self.assertEqual(list(feats.features), [pb.FEATURE_OFFERS])

        with self.assertRaises(grpc.RpcError) as cm:
            stub.CreateInstance(pb.CreateInstanceRequest(), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

        bad = pb.BackendConfig(config_json='{"nope": 1, "synthetic_offers": "ten", "regions": ["py-east-1", 7]}',
                               secrets={"api_key": "invalid"})
        v = stub.ValidateConfig(pb.ValidateConfigRequest(config=bad), timeout=5)
        self.assertFalse(v.valid)
        paths = {d.field_path: d.summary for d in v.diagnostics}
        self.assertEqual(paths.get("/nope"), "unknown field")
        self.assertEqual(paths.get("/synthetic_offers"), "wrong type")
        self.assertEqual(paths.get("/regions/1"), "wrong type")
        v = stub.ValidateConfig(pb.ValidateConfigRequest(
            config=pb.BackendConfig(config_json='{"regions": ["mars-1"]}', secrets={"api_key": "invalid"})), timeout=5)
        self.assertEqual({d.field_path for d in v.diagnostics}, {"/regions/0", "/secrets/api_key"})
        v = stub.ValidateConfig(pb.ValidateConfigRequest(config=pb.BackendConfig(config_json="{")), timeout=5)
        self.assertFalse(v.valid)
        self.assertEqual(v.diagnostics[0].field_path, "")
        self.assertTrue(stub.ValidateConfig(pb.ValidateConfigRequest(
            config=pb.BackendConfig(config_json='{"regions": ["py-eu-1"]}')), timeout=5).valid)

        with self.assertRaises(grpc.RpcError) as cm:
            stub.GetOffers(pb.GetOffersRequest(config=bad), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("/", cm.exception.details())

        base = stub.GetOffers(pb.GetOffersRequest(config=pb.BackendConfig(config_json="{}")), timeout=5).offers
        self.assertGreater(len(base), 0)
        big = stub.GetOffers(pb.GetOffersRequest(
            config=pb.BackendConfig(config_json='{"synthetic_offers": 10000}')), timeout=20).offers
        self.assertEqual(len(big), len(base) + 10000)
        prices = [o.price_per_hour for o in big]
        self.assertEqual(prices, sorted(prices))
        self.assertTrue(all(p > 0 for p in prices))

        req = pb.Requirements(spot=pb.SPOT_POLICY_ON_DEMAND, gpu_names=["l4"], regions=["py-west-1"])
        req.cpus.min = 4
        got = stub.GetOffers(pb.GetOffersRequest(config=pb.BackendConfig(config_json='{"synthetic_offers": 500}'),
                                                 requirements=req), timeout=5).offers
        self.assertGreater(len(got), 0)
        for o in got:
            self.assertFalse(o.resources.spot)
            self.assertEqual(o.region, "py-west-1")
            self.assertGreaterEqual(o.resources.cpus, 4)
            self.assertEqual([g.name for g in o.resources.gpus], ["L4"])

    def test_deadline_frees_the_driver(self):
        stub = self.drv.stub()
        slow = pb.GetOffersRequest(config=pb.BackendConfig(config_json='{"latency_ms": 3000}'))
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            stub.GetOffers(slow, timeout=0.1)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        # A slow call that was given up on must not hold the driver up.
        self.drv.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.drv.proc.wait(timeout=10), 0)
        self.assertLess(time.monotonic() - t0, 2.5)

    def test_stdin_eof_exits_and_stdout_stays_quiet(self):
        self.drv.stub().GetInfo(pb.GetInfoRequest(), timeout=5)
        self.drv.proc.stdin.close()
        self.assertEqual(self.drv.proc.wait(timeout=10), 0)
        self.assertEqual(self.drv.proc.stdout.read(), b"")
        self.assertFalse(os.path.exists(self.drv.socket))
        for line in self.drv.proc.stderr.read().decode().splitlines():
            json.loads(line)

    def test_sigterm_exits_0(self):
        self.drv.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.drv.proc.wait(timeout=10), 0)

    def test_sigterm_lets_call_in_flight_finish(self):
        # The call sleeps 1.5 s in the driver and then sends a large answer:
        # SIGTERM arrives while it runs, within the 5 s grace period.
        stub = self.drv.stub()
        fut = stub.GetOffers.future(pb.GetOffersRequest(
            config=pb.BackendConfig(config_json='{"synthetic_offers": 20000, "latency_ms": 1500}')), timeout=30)
        time.sleep(0.5)
        self.drv.proc.send_signal(signal.SIGTERM)
        self.assertGreaterEqual(len(fut.result().offers), 20000)
        self.assertEqual(self.drv.proc.wait(timeout=10), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
