"""A small Python counterpart of libdrover-driver's serving half.

A driver is a subclass of Provider that declares its config fields and
defines some of the handler methods (get_offers, create_instance, ...).
Features are derived from which handlers the class defines, exactly as the C
SDK derives them from the non-NULL members of its ops struct; every RPC of a
feature that is not advertised answers UNIMPLEMENTED without reaching the
provider. This module also does what drv_main() does in C: argument parsing,
the handshake, health, signals, stdin EOF, logging and config validation.

Python code for the protocol is generated at build time (compute_pb2,
health_pb2 and their _grpc modules); the launcher puts it on sys.path.
"""

import argparse
import concurrent.futures
import datetime
import ipaddress
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

# gRPC core writes its own plain-text lines to stderr; this driver logs JSON
# lines only, and reports the errors that matter itself.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402

import compute_pb2 as pb  # noqa: E402
import compute_pb2_grpc as pb_grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402

MAGIC_COOKIE_KEY = "DROVER_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "6b1d4c0e-drover-driver-v1"
CORE_VERSION = 1
PROTOCOL_VERSION = 1
GRACE_SECONDS = 5.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
COMPUTE_SERVICE = "drover.compute.v1.Compute"

# Feature -> the handlers (RPC name, method name) that implement it. A feature
# is advertised exactly when its provider defines every handler of the group;
# this mirrors driver-sdk/src/rpc_table.h.
FEATURE_GROUPS = [
    (pb.FEATURE_OFFERS, [("GetOffers", "get_offers")]),
    (pb.FEATURE_CREATE_INSTANCE, [("CreateInstance", "create_instance"),
                                  ("GetInstance", "get_instance"),
                                  ("TerminateInstance", "terminate_instance"),
                                  ("ListInstances", "list_instances")]),
    (pb.FEATURE_PLACEMENT_GROUPS, [("CreatePlacementGroup", "create_placement_group"),
                                   ("DeletePlacementGroup", "delete_placement_group")]),
    (pb.FEATURE_VOLUMES, [("CreateVolume", "create_volume"),
                          ("RegisterVolume", "register_volume"),
                          ("DeleteVolume", "delete_volume"),
                          ("AttachVolume", "attach_volume"),
                          ("DetachVolume", "detach_volume")]),
    (pb.FEATURE_GATEWAYS, [("CreateGateway", "create_gateway"),
                           ("TerminateGateway", "terminate_gateway")]),
]


class DriverError(Exception):
    """Raised by a handler to answer with a gRPC status code and message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


# ---- logging: one JSON object per line on stderr ----

_log_lock = threading.Lock()
_log_name = "driver"


def log(level, msg, **fields):
    """Writes one JSON log line on stderr. Never pass secrets."""
    line = {
        "ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "level": level,
        "driver": _log_name,
        "msg": msg,
    }
    line.update(fields)
    text = json.dumps(line, separators=(",", ":")) + "\n"
    with _log_lock:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


# ---- config declaration, schema and validation ----

STRING, INTEGER, NUMBER, BOOLEAN, STRING_ARRAY = "string", "integer", "number", "boolean", "string_array"


class Field:
    """One config field, or with secret=True one entry of the secrets map."""

    def __init__(self, name, type, description="", required=False, secret=False, default=None,
                 minimum=None, maximum=None, enum=None):
        self.name = name
        self.type = type
        self.description = description
        self.required = required
        self.secret = secret
        self.default = default
        self.minimum = minimum
        self.maximum = maximum
        self.enum = enum

    def schema(self):
        if self.type == STRING_ARRAY:
            s = {"type": "array", "items": {"type": "string"}}
        else:
            s = {"type": self.type}
        if self.description:
            s["description"] = self.description
        if self.default is not None:
            s["default"] = self.default
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        if self.enum is not None:
            s["enum"] = list(self.enum)
        return s


def _object_schema(fields, title):
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": {f.name: f.schema() for f in fields},
        "additionalProperties": False,
    }
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return json.dumps(schema, indent=None, separators=(",", ":"))


def json_pointer(*parts):
    """A JSON Pointer from path parts, escaped as RFC 6901 says."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class Diagnostics:
    """Collects diagnostics for ValidateConfig (Terraform style)."""

    def __init__(self):
        self.items = []

    def error(self, field_path, summary, detail=""):
        self.items.append(pb.Diagnostic(severity=pb.SEVERITY_ERROR, summary=summary, detail=detail,
                                        field_path=field_path))

    def warning(self, field_path, summary, detail=""):
        self.items.append(pb.Diagnostic(severity=pb.SEVERITY_WARNING, summary=summary, detail=detail,
                                        field_path=field_path))

    def has_errors(self):
        return any(d.severity == pb.SEVERITY_ERROR for d in self.items)

    def first_error(self):
        for d in self.items:
            if d.severity == pb.SEVERITY_ERROR:
                return d
        return None


def _type_ok(field, value):
    # bool is a subclass of int in Python, but JSON true is not a number.
    if field.type == STRING:
        return isinstance(value, str)
    if field.type == INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if field.type == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if field.type == BOOLEAN:
        return isinstance(value, bool)
    if field.type == STRING_ARRAY:
        return isinstance(value, list)
    return False


_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
                    float: "number", type(None): "null"}


def _json_type(value):
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _check_value(field, value, path, diags):
    if not _type_ok(field, value):
        want = "array of strings" if field.type == STRING_ARRAY else field.type
        diags.error(path, "wrong type", "%s must be %s, got %s" % (field.name, want, _json_type(value)))
        return
    if field.type == STRING_ARRAY:
        for i, item in enumerate(value):
            if not isinstance(item, str):
                diags.error(path + json_pointer(i), "wrong type",
                            "%s[%d] must be a string, got %s" % (field.name, i, _json_type(item)))
        return
    if field.minimum is not None and value < field.minimum:
        diags.error(path, "value too small", "%s must be >= %s, got %s" % (field.name, field.minimum, value))
    if field.maximum is not None and value > field.maximum:
        diags.error(path, "value too large", "%s must be <= %s, got %s" % (field.name, field.maximum, value))
    if field.enum is not None and value not in field.enum:
        diags.error(path, "value not allowed",
                    "%s must be one of %s" % (field.name, ", ".join(map(str, field.enum))))


def check_config(fields, backend_config, diags):
    """Schema checks of a BackendConfig. Returns the config as a dict (or None
    when it is not a JSON object). Secret values never reach a diagnostic."""
    text = backend_config.config_json
    config = {}
    if text.strip():
        try:
            config = json.loads(text)
        except ValueError as e:
            line = getattr(e, "lineno", 0)
            col = getattr(e, "colno", 0)
            diags.error("", "config is not valid JSON", "%s at line %d, column %d" % (
                getattr(e, "msg", str(e)), line, col))
            return None
        if not isinstance(config, dict):
            diags.error("", "config is not a JSON object", "config_json must be an object, got %s" %
                        _json_type(config))
            return None
    plain = {f.name: f for f in fields if not f.secret}
    secret = {f.name: f for f in fields if f.secret}
    for name in sorted(config):
        if name not in plain:
            diags.error(json_pointer(name), "unknown field",
                        "%r is not a config field of this driver (known: %s)" % (
                            name, ", ".join(sorted(plain)) or "none"))
    for f in plain.values():
        if f.name in config:
            _check_value(f, config[f.name], json_pointer(f.name), diags)
        elif f.required:
            diags.error(json_pointer(f.name), "missing required field", "%s is required" % f.name)
    for name in sorted(backend_config.secrets):
        if name not in secret:
            diags.error(json_pointer("secrets", name), "unknown secret",
                        "%r is not a secret of this driver (known: %s)" % (name, ", ".join(sorted(secret)) or "none"))
    for f in secret.values():
        if f.required and f.name not in backend_config.secrets:
            diags.error(json_pointer("secrets", f.name), "missing required secret", "%s is required" % f.name)
    return config


class Config:
    """A checked config: values with declared defaults, and the secrets."""

    def __init__(self, fields, values, secrets):
        self._fields = {f.name: f for f in fields}
        self._values = values
        self.secrets = secrets

    def get(self, name, fallback=None):
        if name in self._values:
            return self._values[name]
        f = self._fields.get(name)
        if f is not None and f.default is not None:
            return f.default
        return fallback


# ---- offer filters (the same rules as drv_offer_matches) ----

def _in_range(r, value):
    if r.HasField("min") and value < r.min:
        return False
    if r.HasField("max") and value > r.max:
        return False
    return True


def offer_matches(offer, req):
    """True when `offer` satisfies every filter set in Requirements `req`."""
    if req is None:
        return True
    res = offer.resources
    if req.HasField("cpus") and not _in_range(req.cpus, res.cpus):
        return False
    if req.HasField("memory_mib") and not _in_range(req.memory_mib, res.memory_mib):
        return False
    if req.HasField("disk_mib") and not _in_range(req.disk_mib, res.disk_mib):
        return False
    if req.HasField("gpu_count") and not _in_range(req.gpu_count, sum(g.count for g in res.gpus)):
        return False
    if req.HasField("gpu_memory_mib"):
        # Memory of each GPU; an offer without GPUs has none, i.e. 0.
        mems = [g.memory_mib for g in res.gpus] or [0]
        if not all(_in_range(req.gpu_memory_mib, m) for m in mems):
            return False
    if req.gpu_names:
        wanted = {n.lower() for n in req.gpu_names}
        if not res.gpus or not all(g.name.lower() in wanted for g in res.gpus):
            return False
    if req.spot == pb.SPOT_POLICY_ON_DEMAND and res.spot:
        return False
    if req.spot == pb.SPOT_POLICY_SPOT and not res.spot:
        return False
    if req.HasField("max_price") and offer.price_per_hour > req.max_price:
        return False
    if req.regions and offer.region not in req.regions:
        return False
    if req.cpu_archs and res.cpu_arch not in req.cpu_archs:
        return False
    return True


# ---- the provider base class ----

class Provider:
    """Subclass this. Set TYPE, VERSION, DESCRIPTION, CONFIG_FIELDS (a list of
    Field) and MARKERS (marker Feature values), and define the handlers of the
    features you implement, e.g. `def get_offers(self, call, request)`
    returning the response message. Handlers run on a thread pool, several at
    once, and raise DriverError to fail a call.
    """

    TYPE = "unnamed"
    VERSION = "0.0.0"
    DESCRIPTION = ""
    CONFIG_FIELDS = []
    MARKERS = ()

    def validate(self, config, diags):
        """Optional semantic checks after the schema checks passed."""

    def narrow_features(self, config, features):
        """Optional: returns a subset of `features` for this config."""
        return features


def derive_features(provider):
    """The sorted feature list implied by the provider's handlers and markers.
    Raises ValueError naming the missing handler of a partly implemented group,
    as drv_driver_check does in C."""
    features = set()
    for feature, handlers in FEATURE_GROUPS:
        present = [m for _, m in handlers if callable(getattr(provider, m, None))]
        if present and len(present) != len(handlers):
            missing = [m for _, m in handlers if m not in present]
            raise ValueError("%s implements %s but not %s: a feature is all its handlers or none" % (
                type(provider).__name__, ", ".join(present), ", ".join(missing)))
        if present:
            features.add(feature)
    features.update(provider.MARKERS)
    return sorted(features)


class Call:
    """What a handler gets besides its request: the checked config, the
    method name, and the deadline of the gRPC call."""

    def __init__(self, method, config, context):
        self.method = method
        self.config = config
        self._context = context

    def time_left(self):
        """Seconds until the caller's deadline, or None when there is none."""
        return self._context.time_remaining()

    def cancelled(self):
        return not self._context.is_active()

    def log(self, level, msg, **fields):
        log(level, msg, method=self.method, **fields)


class _InFlight(grpc.ServerInterceptor):
    """Counts calls from their arrival until their status is sent. grpcio's
    server.stop(grace) waits the whole grace period while any client keeps
    an idle connection open, so shutdown waits for this count instead and
    then stops at once. The interceptor runs when the server thread takes the
    call, before it queues for a handler thread, so a call that arrived just
    before SIGTERM is counted too."""

    def __init__(self):
        self._cond = threading.Condition()
        self._n = 0

    def _done(self):
        with self._cond:
            self._n -= 1
            self._cond.notify_all()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        with self._cond:
            self._n += 1

        def tracked(request, context):
            # The callback runs when the RPC ends, after a large response was written.
            if not context.add_callback(self._done):
                self._done()
            return behavior(request, context)

        return handler._replace(unary_unary=tracked)

    def wait_idle(self, timeout):
        with self._cond:
            return self._cond.wait_for(lambda: self._n <= 0, timeout)


class _Service:
    """Turns a Provider into the Compute servicer the generated code wants."""

    def __init__(self, provider):
        self.provider = provider
        self.fields = list(provider.CONFIG_FIELDS)
        self.features = derive_features(provider)
        self.info = pb.GetInfoResponse(
            type=provider.TYPE, driver_version=provider.VERSION, protocol_version=pb.PROTOCOL_VERSION_1,
            config_schema_json=_object_schema([f for f in self.fields if not f.secret], provider.TYPE + " config"),
            secrets_schema_json=_object_schema([f for f in self.fields if f.secret], provider.TYPE + " secrets"),
            description=provider.DESCRIPTION)

    def validate(self, backend_config):
        diags = Diagnostics()
        values = check_config(self.fields, backend_config, diags)
        config = None
        if not diags.has_errors():
            config = Config(self.fields, values, dict(backend_config.secrets))
            self.provider.validate(config, diags)
        return config, diags

    def features_for(self, config):
        if config is None:
            return list(self.features)
        narrowed = set(self.provider.narrow_features(config, list(self.features)))
        return [f for f in self.features if f in narrowed]

    def checked_config(self, request, context):
        config, diags = self.validate(request.config)
        if diags.has_errors():
            d = diags.first_error()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "invalid config: %s: %s%s" % (d.field_path or "(config)", d.summary,
                                                        " (" + d.detail + ")" if d.detail else ""))
        return config

    # identity RPCs

    def GetInfo(self, request, context):
        return self.info

    def GetFeatures(self, request, context):
        if request.HasField("config"):
            return pb.GetFeaturesResponse(features=self.features_for(self.checked_config(request, context)))
        return pb.GetFeaturesResponse(features=self.features)

    def ValidateConfig(self, request, context):
        _, diags = self.validate(request.config)
        return pb.ValidateConfigResponse(valid=not diags.has_errors(), diagnostics=diags.items)

    def make_handler(self, feature, rpc, method):
        name = self.provider.TYPE

        def unimplemented(request, context):
            context.abort(grpc.StatusCode.UNIMPLEMENTED,
                          "%s does not implement %s (feature %s)" % (name, rpc, pb.Feature.Name(feature)))

        fn = getattr(self.provider, method, None)
        if feature not in self.features:
            return unimplemented

        def handler(request, context):
            config = self.checked_config(request, context)
            if feature not in self.features_for(config):
                unimplemented(request, context)
            try:
                return fn(Call(rpc, config, context), request)
            except DriverError as e:
                context.abort(e.code, e.message)
            except Exception as e:  # a driver bug: report it as one, in our own log format
                log("error", "handler raised an exception", method=rpc, error=type(e).__name__)
                context.abort(grpc.StatusCode.INTERNAL, "%s failed: internal error in driver %s (%s)" % (
                    rpc, name, type(e).__name__))

        return handler

    def servicer(self):
        s = pb_grpc.ComputeServicer()
        s.GetInfo = self.GetInfo
        s.GetFeatures = self.GetFeatures
        s.ValidateConfig = self.ValidateConfig
        for feature, handlers in FEATURE_GROUPS:
            for rpc, method in handlers:
                setattr(s, rpc, self.make_handler(feature, rpc, method))
        return s


class _Health(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        if request.service in ("", COMPUTE_SERVICE):
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %r" % request.service)


# ---- running ----

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
        raise ValueError("--listen wants HOST:PORT (e.g. 127.0.0.1:4100), got %r" % value)
    return host, int(port)


def _parse_args(provider, argv):
    p = argparse.ArgumentParser(
        prog="drover-driver-" + provider.TYPE,
        description="drover driver for backend type %r: %s. Started by droverd (spawned mode, "
                    "with %s set) it serves on a unix socket and prints a handshake line; with "
                    "--listen it serves standalone over TCP." % (provider.TYPE, provider.DESCRIPTION,
                                                                 MAGIC_COOKIE_KEY))
    p.add_argument("--version", action="store_true", help="print the driver version and exit")
    p.add_argument("--info", action="store_true", help="print GetInfo as JSON and exit")
    p.add_argument("--listen", metavar="HOST:PORT", help="serve standalone over TCP on this address")
    p.add_argument("--tls-cert", metavar="PEM", help="server certificate (with --listen)")
    p.add_argument("--tls-key", metavar="PEM", help="server private key (with --listen)")
    p.add_argument("--client-ca", metavar="PEM", help="CA that signs client certificates (mutual TLS)")
    p.add_argument("--insecure", action="store_true",
                   help="allow plain TCP on a non-loopback address (never in production)")
    p.add_argument("--workers", type=int, default=8, metavar="N", help="handler threads (default 8)")
    args = p.parse_args(argv)
    tls = [args.tls_cert, args.tls_key, args.client_ca]
    if any(tls) and not all(tls):
        names = ["--tls-cert", "--tls-key", "--client-ca"]
        p.error("mutual TLS needs --tls-cert, --tls-key and --client-ca together; missing %s" %
                ", ".join(n for n, v in zip(names, tls) if not v))
    if any(tls) and not args.listen:
        p.error("--tls-cert/--tls-key/--client-ca only apply with --listen")
    if args.workers < 1 or args.workers > 256:
        p.error("--workers must be between 1 and 256, got %d" % args.workers)
    if args.listen:
        try:
            host, _ = _split_host_port(args.listen)
        except ValueError as e:
            p.error(str(e))
        if not any(tls) and not _is_loopback(host) and not args.insecure:
            p.error("--listen %s: plain TCP is only allowed on loopback; give --tls-cert, --tls-key "
                    "and --client-ca, or --insecure" % args.listen)
    return args


def _read_file(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SystemExit("drover-driver: cannot read %s %s: %s" % (what, path, e.strerror))


def _watch_stdin(reasons, wake_fd):
    # The host holds our stdin; EOF means it is gone, so we must go too.
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    reasons.append("stdin closed")
    os.write(wake_fd, b"\0")


def main(provider, argv=None):
    """Runs `provider` as a driver process. Returns the exit code when it
    cannot start; once it served, it ends the process itself (exit status 0)."""
    global _log_name
    _log_name = provider.TYPE
    args = _parse_args(provider, sys.argv[1:] if argv is None else argv)
    try:
        service = _Service(provider)
    except ValueError as e:
        print("drover-driver-%s: %s" % (provider.TYPE, e), file=sys.stderr)
        return 1
    if args.version:
        print("drover-driver-%s %s (protocol %d)" % (provider.TYPE, provider.VERSION, PROTOCOL_VERSION))
        return 0
    if args.info:
        info = service.info
        print(json.dumps({
            "type": info.type, "driver_version": info.driver_version,
            "protocol_version": PROTOCOL_VERSION, "description": info.description,
            "features": [pb.Feature.Name(f)[len("FEATURE_"):] for f in service.features],
            "config_schema": json.loads(info.config_schema_json),
            "secrets_schema": json.loads(info.secrets_schema_json),
        }, indent=2))
        return 0

    spawned = not args.listen
    if spawned and os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        print("drover-driver-%s: this is a drover driver plugin, started by droverd or "
              "drover-conformance, not a program to run by hand (%s is not set to the expected value). "
              "To run it standalone use --listen HOST:PORT; see --help." % (provider.TYPE, MAGIC_COOKIE_KEY),
              file=sys.stderr)
        return 1

    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.so_reuseport", 0)]
    inflight = _InFlight()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=args.workers), options=options,
                         interceptors=[inflight])
    pb_grpc.add_ComputeServicer_to_server(service.servicer(), server)
    health_pb2_grpc.add_HealthServicer_to_server(_Health(), server)

    own_dir = None
    sock_path = None
    try:
        if spawned:
            sock_dir = os.environ.get("DROVER_SOCKET_DIR")
            if sock_dir and not os.path.isdir(sock_dir):
                raise RuntimeError("DROVER_SOCKET_DIR=%s is not a directory" % sock_dir)
            if not sock_dir:
                own_dir = sock_dir = tempfile.mkdtemp(prefix="drover-%s-" % provider.TYPE)
            sock_path = os.path.join(os.path.abspath(sock_dir), "%s-%d.sock" % (provider.TYPE, os.getpid()))
            if server.add_insecure_port("unix:" + sock_path) == 0:
                raise RuntimeError("cannot listen on unix socket %s" % sock_path)
            network, address = "unix", sock_path
        else:
            host, port = _split_host_port(args.listen)
            if args.tls_cert:
                creds = grpc.ssl_server_credentials(
                    [(_read_file(args.tls_key, "TLS key"), _read_file(args.tls_cert, "TLS certificate"))],
                    root_certificates=_read_file(args.client_ca, "client CA"), require_client_auth=True)
                bound = server.add_secure_port(args.listen, creds)
            else:
                bound = server.add_insecure_port(args.listen)
            if bound == 0:
                raise RuntimeError("cannot listen on %s" % args.listen)
            network, address = "tcp", "%s:%d" % (host, bound)
    except (RuntimeError, OSError) as e:
        print("drover-driver-%s: %s" % (provider.TYPE, e), file=sys.stderr)
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
        return 1

    # The main thread sleeps in read() on a pipe until a signal (through
    # Python's wakeup fd) or the stdin watcher writes to it: no polling, and
    # the signal handler itself takes no lock.
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
    log("info", "serving", network=network, address=address,
        features=[pb.Feature.Name(f) for f in service.features])
    if spawned:
        threading.Thread(target=_watch_stdin, args=(reasons, wake_w), daemon=True, name="stdin").start()

    while not reasons:
        os.read(wake_r, 64)
    log("info", "stopping", reason=reasons[0], grace_s=GRACE_SECONDS)
    # stop() refuses new calls at once; calls still running after the grace
    # period are cancelled by the second stop().
    server.stop(GRACE_SECONDS)
    # A call whose arrival the server thread is handling right now is not
    # counted yet: give it a moment to be.
    time.sleep(0.05)
    if not inflight.wait_idle(GRACE_SECONDS):
        log("warn", "calls still running after the grace period; cancelling them")
    server.stop(0).wait()
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
