"""Shared fixtures: where the drover checkout and its build tree are, and a
driver process started the way droverd starts one."""

import os
import re
import subprocess
import sys

import grpc
import pytest

from drover_driver.protocol import health_pb2_grpc, pb_grpc

SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIR = os.environ.get("DROVER_SOURCE_DIR") or os.path.dirname(os.path.dirname(SDK_DIR))
BUILD_DIR = os.environ.get("DROVER_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
DRIVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "drivers")
COOKIE = {"DROVER_MAGIC_COOKIE": "6b1d4c0e-drover-driver-v1"}
HANDSHAKE = re.compile(r"^1\|1\|unix\|(/[^|]+)\|grpc\n$")


class Driver:
    """A driver process spawned as droverd spawns one: cleared environment,
    cookie, socket directory, stdin pipe. `argv` is the command line."""

    def __init__(self, argv, sock_dir, env=None):
        e = {"PATH": "/usr/bin:/bin", "DROVER_SOCKET_DIR": str(sock_dir)}
        e.update(COOKIE)
        e.update(env or {})
        self.proc = subprocess.Popen(argv, env=e, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.line = self.proc.stdout.readline().decode()
        m = HANDSHAKE.match(self.line)
        if not m:
            self.close()
            raise AssertionError("bad handshake %r; stderr: %s" % (self.line, self.proc.stderr.read().decode()))
        self.socket = m.group(1)
        self.channel = grpc.insecure_channel("unix:" + self.socket)
        self.stub = pb_grpc.ComputeStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def stop(self):
        """Closes stdin (the host going away) and returns (exit status, stderr)."""
        self.channel.close()
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=20)
        return rc, self.proc.stderr.read().decode()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


def script(name):
    """argv that runs tests/drivers/<name>.py with this interpreter."""
    return [sys.executable, os.path.join(DRIVERS, name + ".py")]


@pytest.fixture
def spawn(tmp_path):
    started = []

    def start(argv, env=None):
        d = Driver(argv, tmp_path, env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()
