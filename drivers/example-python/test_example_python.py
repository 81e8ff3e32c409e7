"""Quick checks of drover-driver-example-python through its launcher: the
command line, the handshake, a few real RPCs over its unix socket, and both
ways of stopping it. The full protocol proof is the conformance harness.

usage: test_example_python.py LAUNCHER (run with the interpreter of the
venv the driver is installed in, which has the drover_driver package)
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
del sys.argv[1:2]

import grpc  # noqa: E402

from drover_driver.protocol import health_pb2, health_pb2_grpc, pb, pb_grpc  # noqa: E402

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
        self.assertRegex(r.stdout, r"^example-python \d+\.\d+\.\d+ \(drover protocol 1\)\n$")

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
        self.assertIn("not meant to be run directly", r.stderr)
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
