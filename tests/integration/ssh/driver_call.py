#!/usr/bin/python3
"""Calls a spawned drover driver's Compute RPCs, for the ssh driver's tests.

usage: driver_call.py DRIVER_BIN CONFIG_FILE [DRIVER_ARGS...] < calls

CONFIG_FILE is JSON {"config": {...}, "secrets": {...}}. Each stdin line is
one call, {"method": "CreateInstance", "request": {...}, "timeout_ms": N,
"config": {...overlay...}} (the request in protobuf's JSON form, its config
filled in from CONFIG_FILE with the overlay's keys replaced); each answer is
one stdout line {"code": "OK", "message": "", "response": {...}, "ms": N,
"driver_cpu_ms": N} (the driver's CPU time so far).
With "parallel": N the call is made N times at once, and the answer is
{"codes": [...], "ms": N}.
The driver is spawned the way droverd spawns it (magic cookie, handshake
line, stdin held open) and its stderr goes to ours.
"""

import json
import os
import subprocess
import sys
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("DROVER_BIN", "")
for d in [os.path.join(BIN, "..", "tests", "conformance", "pygen"), os.path.join(HERE, "pygen")]:
    if os.path.isdir(d):
        sys.path.insert(0, d)
        break

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

import compute_pb2  # noqa: E402
import compute_pb2_grpc  # noqa: E402


def cpu_ms(pid: int) -> float:
    """The driver's CPU time so far (user + system), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, IndexError, ValueError):
        return -1.0


def one(stub, method: str, req, timeout: float) -> dict:
    start = time.monotonic()
    out = {"code": "OK", "message": ""}
    try:
        resp = getattr(stub, method)(req, timeout=timeout)
        out["response"] = json_format.MessageToDict(resp)
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["message"] = e.details()
    out["ms"] = round((time.monotonic() - start) * 1000, 1)
    return out


def main() -> int:
    driver, config_file = sys.argv[1], sys.argv[2]
    with open(config_file) as f:
        base = json.load(f)
    env = dict(os.environ, DROVER_MAGIC_COOKIE="6b1d4c0e-drover-driver-v1")
    proc = subprocess.Popen([driver] + sys.argv[3:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    line = proc.stdout.readline().decode().strip()
    parts = line.split("|")
    if len(parts) != 5 or parts[2] != "unix":
        print(f"driver_call: bad handshake line {line!r}", file=sys.stderr)
        return 2
    channel = grpc.insecure_channel("unix:" + parts[3])
    stub = compute_pb2_grpc.ComputeStub(channel)
    try:
        for raw in sys.stdin:
            if not raw.strip():
                continue
            call = json.loads(raw)
            method = call["method"]
            cfg = dict(base.get("config", {}))
            cfg.update(call.get("config", {}))
            req_cls = getattr(compute_pb2, method + "Request")
            req = json_format.ParseDict(call.get("request", {}), req_cls())
            if method not in ("GetInfo",):
                req.config.config_json = json.dumps(cfg)
                for k, v in base.get("secrets", {}).items():
                    req.config.secrets[k] = v
            timeout = call.get("timeout_ms", 20000) / 1000
            n = call.get("parallel", 0)
            if n:
                # N copies at once; one answer line with every code.
                start = time.monotonic()
                with futures.ThreadPoolExecutor(n) as pool:
                    outs = list(pool.map(lambda _: one(stub, method, req, timeout), range(n)))
                out = {"codes": [o["code"] for o in outs], "ms": round((time.monotonic() - start) * 1000, 1)}
            else:
                out = one(stub, method, req, timeout)
            out["driver_cpu_ms"] = cpu_ms(proc.pid)
            print(json.dumps(out), flush=True)
    finally:
        channel.close()
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
