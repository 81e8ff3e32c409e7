"""The process contract of a driver, as the C SDK's drv_main() keeps it
(driver-sdk/src/driver_main.c, docs/PROTOCOL.md): the command line, the
magic cookie, the unix socket in $DROVER_SOCKET_DIR and the handshake line,
or --listen with mutual TLS; exit on stdin EOF, SIGTERM with a grace period."""

import argparse
import concurrent.futures
import ipaddress
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import grpc

from . import log as _log
from .compute import Compute, DefinitionError
from .log import log
from .protocol import PROTOCOL_VERSION, Feature
from .service import Service

__all__ = ["main"]

MAGIC_COOKIE_KEY = "DROVER_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "6b1d4c0e-drover-driver-v1"
CORE_VERSION = 1
DEFAULT_GRACE_MS = 5000
DEFAULT_WORKERS = 4
MAX_WORKERS = 256
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class _InFlight(grpc.ServerInterceptor):
    """Counts calls from their arrival until their status is sent. grpcio's
    server.stop(grace) waits the whole grace period while any client keeps
    an idle connection open, so shutdown waits for this count instead and
    then stops at once. The interceptor runs when the server thread takes the
    call, before it queues for a handler thread, so a call that arrived just
    before SIGTERM is counted too. A plain lock guards the count, and only
    shutdown waits for it, polling, so that the path of every call runs no
    Python code of a condition's notify."""

    def __init__(self):
        self._lock = threading.Lock()
        self._n = 0

    def _done(self):
        with self._lock:
            self._n -= 1

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        with self._lock:
            self._n += 1
        done = self._done

        def tracked(request, context):
            # The callback runs when the RPC ends, after a large response was written.
            if not context.add_callback(done):
                done()
            return behavior(request, context)

        return handler._replace(unary_unary=tracked)

    def wait_idle(self, timeout):
        end = time.monotonic() + timeout
        while self._n > 0:
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
        return True


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_host_port(value):
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError('--listen: expected HOST:PORT (e.g. 127.0.0.1:4100), got "%.80s"' % value)
    return host, int(port)


def _parser(prog, cls):
    p = argparse.ArgumentParser(
        prog=prog, description='drover driver for backend type "%s" (version %s): %s. Without --listen this '
        "program is a plugin: droverd or drover-conformance start it, read the handshake line it prints, and talk "
        "gRPC over a private unix socket." % (cls.TYPE, cls.VERSION, cls.DESCRIPTION),
        epilog="Environment: DROVER_SOCKET_DIR (socket directory in spawned mode), DROVER_LOG_LEVEL (debug, info, "
        "warn, error).")
    p.add_argument("--version", action="store_true", help="print the driver version and exit")
    p.add_argument("--info", action="store_true", help="print GetInfo (type, version, features, config schema) as JSON")
    p.add_argument("--listen", metavar="HOST:PORT", help="serve standalone over TCP (port 0 picks one)")
    p.add_argument("--tls-cert", metavar="FILE", help="server certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    p.add_argument("--client-ca", metavar="FILE", help="CA (PEM) that client certificates must chain to")
    p.add_argument("--insecure", action="store_true", help="allow plain TCP on a non-loopback address")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help="handler threads (1..%d, default %d)" % (MAX_WORKERS, DEFAULT_WORKERS))
    p.add_argument("--grace-ms", type=int, default=DEFAULT_GRACE_MS, metavar="N",
                   help="on SIGTERM, let calls finish for N ms (default %d)" % DEFAULT_GRACE_MS)
    return p


def _parse_args(p, argv):
    args = p.parse_args(argv)
    tls = [args.tls_cert, args.tls_key, args.client_ca]
    names = ["--tls-cert", "--tls-key", "--client-ca"]
    if not 1 <= args.workers <= MAX_WORKERS:
        p.error("--workers: expected an integer from 1 to %d, got %d" % (MAX_WORKERS, args.workers))
    if not 0 <= args.grace_ms <= 3600000:
        p.error("--grace-ms: expected milliseconds from 0 to 3600000, got %d" % args.grace_ms)
    if not args.listen:
        given = [n for n, v in zip(names, tls) if v] + (["--insecure"] if args.insecure else [])
        if given:
            p.error("%s needs --listen HOST:PORT" % given[0])
        return args
    try:
        host, _ = _split_host_port(args.listen)
    except ValueError as e:
        p.error(str(e))
    if any(tls) and not all(tls):
        p.error("mutual TLS needs --tls-cert, --tls-key and --client-ca together; missing %s" %
                ", ".join(n for n, v in zip(names, tls) if not v))
    if any(tls) and args.insecure:
        p.error("--insecure cannot be combined with TLS options")
    if not any(tls) and not _is_loopback(host) and not args.insecure:
        p.error("--listen %s: plain TCP is only allowed on loopback; give --tls-cert, --tls-key and --client-ca, "
                "or --insecure" % args.listen)
    for n, path in zip(names, tls):
        if path and not os.access(path, os.R_OK):
            p.error('%s: cannot read "%.200s"' % (n, path))
    return args


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _watch_stdin(reasons, wake_fd):
    # The host holds our stdin; EOF means it is gone, so we must go too.
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    reasons.append("stdin closed")
    os.write(wake_fd, b"\0")


def _info_json(service):
    info = service.info
    return json.dumps({"type": info.type, "driver_version": info.driver_version,
                       "protocol_version": info.protocol_version, "description": info.description,
                       "features": [Feature(f).name for f in service.features],
                       "config_schema": json.loads(info.config_schema_json),
                       "secrets_schema": json.loads(info.secrets_schema_json)}, indent=2)


def main(driver, argv=None):
    """Runs `driver` (a Compute subclass, or an instance of one) as a driver
    process and returns the exit status. Once it served, it ends the process
    itself with status 0 when stopped."""
    if isinstance(driver, type):
        driver = driver()
    if not isinstance(driver, Compute):
        raise TypeError("drover_driver.main wants a Compute subclass, got %r" % (driver,))
    cls = type(driver)
    prog = "drover-driver-" + (cls.TYPE or "unnamed")
    args = _parse_args(_parser(prog, cls), sys.argv[1:] if argv is None else argv)
    if args.version:
        print("%s %s (drover protocol %d)" % (cls.TYPE, cls.VERSION, PROTOCOL_VERSION))
        return 0
    try:
        service = Service(driver)
    except (DefinitionError, TypeError) as e:
        print("%s: %s" % (prog, e), file=sys.stderr)
        return 1
    if args.info:
        print(_info_json(service))
        return 0

    spawned = not args.listen
    if spawned and os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        print('%s: this is a drover driver plugin (backend type "%s"); it is not meant to be run directly.\n'
              "Run it through droverd or drover-conformance, or serve it standalone with --listen HOST:PORT "
              "(see --help)." % (prog, cls.TYPE), file=sys.stderr)
        return 1
    _log.set_driver(cls.TYPE)
    return _serve(driver, service, args, spawned)


def _listen(server, args, cls, spawned):
    """Binds the server; returns (network, address, socket path, own dir)."""
    if spawned:
        sock_dir = os.environ.get("DROVER_SOCKET_DIR")
        own_dir = None
        if sock_dir:
            if not os.path.isabs(sock_dir) or not os.path.isdir(sock_dir):
                raise RuntimeError('DROVER_SOCKET_DIR "%.200s" is not an absolute path to a directory' % sock_dir)
        else:
            own_dir = sock_dir = tempfile.mkdtemp(prefix="drover-%s-" % cls.TYPE)
        path = os.path.join(sock_dir, "%s.sock" % cls.TYPE)
        if server.add_insecure_port("unix:" + path) == 0:
            raise RuntimeError("cannot listen on unix socket %s" % path)
        return "unix", path, path, own_dir
    host, _ = _split_host_port(args.listen)
    if args.tls_cert:
        creds = grpc.ssl_server_credentials([(_read(args.tls_key), _read(args.tls_cert))],
                                            root_certificates=_read(args.client_ca), require_client_auth=True)
        port = server.add_secure_port(args.listen, creds)
    else:
        port = server.add_insecure_port(args.listen)
    if port == 0:
        raise RuntimeError("cannot listen on %s" % args.listen)
    return "tcp", "%s:%d" % (host, port), None, None


def _serve(driver, service, args, spawned):
    cls = type(driver)
    inflight = _InFlight()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="call"),
                         handlers=service.handlers(), interceptors=[inflight],
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                  ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)])
    try:
        network, address, sock_path, own_dir = _listen(server, args, cls, spawned)
    except (RuntimeError, OSError) as e:
        log("error", str(e))
        return 1
    try:
        driver.start()
    except Exception as e:
        log("error", "start() failed: %s: %s" % (type(e).__name__, e))
        return 1

    # The main thread sleeps in read() on a pipe until a signal (through
    # Python's wakeup fd) or the stdin watcher writes to it. The signal
    # handlers only append to a list: a handler that takes a lock (as
    # Event.set() does) deadlocks when the signal lands while the main
    # thread holds that lock.
    reasons = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, lambda signo, _: reasons.append("signal %d" % signo))
    signal.signal(signal.SIGINT, lambda signo, _: reasons.append("signal %d" % signo))
    server.start()
    sys.stdout.write("%d|%d|%s|%s|grpc\n" % (CORE_VERSION, PROTOCOL_VERSION, network, address))
    sys.stdout.flush()
    # Nothing may reach stdout after the handshake: the host reads it as protocol.
    sys.stdout = sys.stderr
    log("info", "serving", network=network, address=address, features=[Feature(f).name for f in service.features])
    if spawned:
        threading.Thread(target=_watch_stdin, args=(reasons, wake_w), daemon=True, name="stdin").start()

    while not reasons:
        os.read(wake_r, 64)
    grace = args.grace_ms / 1000.0
    log("info", "stopping", reason=reasons[0], grace_ms=args.grace_ms)
    # stop() refuses new calls at once; calls still running after the grace
    # period are cancelled by the second stop().
    server.stop(grace)
    # A call whose arrival the server thread is handling right now is not
    # counted yet: give it a moment to be.
    time.sleep(0.05)
    if not inflight.wait_idle(grace):
        log("warn", "calls still running after the grace period; cancelling them")
    server.stop(0).wait()
    try:
        driver.stop()
    except Exception as e:
        log("error", "stop() failed: %s: %s" % (type(e).__name__, e))
    if sock_path:
        try:
            os.unlink(sock_path)
        except OSError:
            pass
        # The host's socket directory too, when it is empty: a host that was
        # killed cannot remove it, and rmdir() removes nothing else.
        if not own_dir:
            try:
                os.rmdir(os.path.dirname(sock_path))
            except OSError:
                pass
    if own_dir:
        shutil.rmtree(own_dir, ignore_errors=True)
    log("info", "stopped")
    # Everything is answered, written and removed by now. Under load the
    # interpreter's own shutdown was seen to leave the process behind for
    # over 10 s after this line (its main thread gone, the stdin watcher
    # still blocked in read), so the process ends here instead.
    sys.stderr.flush()
    os._exit(0)
