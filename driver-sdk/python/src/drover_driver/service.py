"""Turns a driver class into the gRPC handlers of the Compute service:
dispatch by the RPC table read from compute.proto, config checks before
every provider call, UNIMPLEMENTED for what the driver does not advertise,
and the error mapping (exceptions → each RPC's allowed status codes)."""

import asyncio
import inspect
import threading
import time
import traceback

import grpc

from . import errors
from .compute import Compute, DefinitionError, derive_features
from .config import Diagnostics, Schema
from .log import Logger, log
from .protocol import (COMPUTE_SERVICE, FEATURE_RPCS, HEALTH_SERVICE, IDENTITY_RPCS, PROTOCOL_VERSION, RPC_CODES,
                       health_pb2, method_descriptor, pb, snake)

__all__ = ["Call", "Service"]

# Outcomes that come from the caller's side (it gave up, or its deadline
# passed) and the SDK's own bug report are allowed for every RPC.
_ALWAYS = frozenset({grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL})


class Call:
    """What a handler gets besides its request. Attributes: method (RPC
    name), config and secrets (instances of the driver's Config and Secrets
    dataclasses, checked), deadline (time.monotonic() value or None), log (a
    Logger). `cancelled` turns true when the caller gives up or its deadline
    passes: long handlers poll it and stop."""

    __slots__ = ("method", "config", "secrets", "deadline", "log", "_context")

    def __init__(self, method, context, config=None, secrets=None):
        self.method = method
        self.config = config
        self.secrets = secrets
        self._context = context
        left = context.time_remaining() if context is not None else None
        self.deadline = None if left is None else time.monotonic() + left
        self.log = Logger(method)

    def time_left(self):
        """Seconds until the caller's deadline (<= 0 once passed), or None."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    @property
    def cancelled(self):
        if self._context is not None and not self._context.is_active():
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline


class _Loop:
    """One asyncio event loop on its own thread for `async def` handlers,
    started on the first one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop = None

    def run(self, coro, context):
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, daemon=True, name="asyncio").start()
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        # A caller that gives up cancels the coroutine (CancelledError in it).
        if context is not None:
            context.add_callback(fut.cancel)
        return fut.result()


class Service:
    def __init__(self, driver):
        self.driver = driver
        cls = type(driver)
        if not cls.TYPE:
            raise DefinitionError("%s sets no TYPE (the backend type, [a-z0-9-]+)" % cls.__name__)
        self.features = derive_features(cls)
        self.schema = Schema(cls.TYPE, cls.Config, cls.Secrets)
        self.narrows = cls.features_for is not Compute.features_for
        self.validates = cls.validate_config is not Compute.validate_config
        self.info = pb.GetInfoResponse(type=cls.TYPE, driver_version=cls.VERSION, protocol_version=PROTOCOL_VERSION,
                                       config_schema_json=self.schema.config_schema_json(),
                                       secrets_schema_json=self.schema.secrets_schema_json(),
                                       description=cls.DESCRIPTION)
        self._loop = _Loop()

    # ---- config and features ----

    def validate(self, backend_config, call=None):
        diags = Diagnostics()
        parsed = self.schema.check(backend_config, diags)
        if parsed is not None and self.validates:
            call = call or Call("ValidateConfig", None)
            call.config, call.secrets = parsed
            self._invoke(self.driver.validate_config, call, diags)
        return parsed, diags

    def features_for(self, call):
        if not self.narrows:
            return self.features
        narrowed = self.driver.features_for(call.config, frozenset(self.features))
        return [f for f in self.features if f in narrowed]

    def _checked(self, call, backend_config):
        parsed, diags = self.validate(backend_config, call)
        bad = diags.errors
        if bad:
            d = bad[0]
            raise errors.InvalidConfig("invalid config: %s: %s%s" % (d.field_path or "(config)", d.summary,
                                                                     " (%s)" % d.detail if d.detail else ""))
        call.config, call.secrets = parsed

    def _invoke(self, fn, call, arg):
        result = fn(call, arg)
        if inspect.isawaitable(result):
            result = self._loop.run(result, call._context)
        return result

    # ---- handlers ----

    def _fail(self, rpc, context, exc):
        if isinstance(exc, errors.DriverError):
            code, msg = exc.code, exc.message
        else:
            # A driver bug: the caller gets a short message, the log the traceback.
            log("error", "handler raised %s" % type(exc).__name__, rpc,
                traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            code, msg = grpc.StatusCode.INTERNAL, "%s failed: internal error in driver %s (%s)" % (
                rpc, self.info.type, type(exc).__name__)
        if code not in RPC_CODES[rpc] and code not in _ALWAYS:
            log("error", "driver bug: %s answered %s, which compute.proto does not allow for %s (message: %s)" % (
                rpc, code.name, rpc, msg[:200]), rpc)
            msg = "%s failed: driver %s answered %s, which %s may not return" % (rpc, self.info.type, code.name, rpc)
            code = grpc.StatusCode.INTERNAL
        context.abort(code, errors.cap_message(msg) or code.name)

    def _reply(self, rpc, result, response_cls):
        if result is None and not response_cls.DESCRIPTOR.fields:
            return response_cls()
        if not isinstance(result, response_cls):
            raise TypeError("handler of %s returned %s, not %s" % (rpc, type(result).__name__, response_cls.__name__))
        return result

    def _gated(self, rpc, feature, response_cls):
        fn = getattr(self.driver, snake(rpc), None)
        name = self.info.type

        def handler(request, context):
            call = Call(rpc, context)
            try:
                if feature not in self.features:
                    raise errors.Unimplemented("%s does not implement %s (feature %s)" % (name, rpc, feature.name))
                self._checked(call, request.config)
                if feature not in self.features_for(call):
                    raise errors.Unimplemented("%s does not support %s (feature %s) for this config" % (
                        name, rpc, feature.name))
                return self._reply(rpc, self._invoke(fn, call, request), response_cls)
            except Exception as e:  # every failure becomes a status, see _fail
                self._fail(rpc, context, e)

        return handler

    def GetInfo(self, request, context):
        return self.info

    def GetFeatures(self, request, context):
        try:
            if not request.HasField("config"):
                return pb.GetFeaturesResponse(features=self.features)
            call = Call("GetFeatures", context)
            self._checked(call, request.config)
            return pb.GetFeaturesResponse(features=self.features_for(call))
        except Exception as e:
            self._fail("GetFeatures", context, e)

    def ValidateConfig(self, request, context):
        try:
            _, diags = self.validate(request.config, Call("ValidateConfig", context))
            return pb.ValidateConfigResponse(valid=not diags.errors, diagnostics=diags.items)
        except Exception as e:
            self._fail("ValidateConfig", context, e)

    def handlers(self):
        """The generic handlers of the Compute and Health services."""
        methods = {}
        for feature, rpcs in FEATURE_RPCS.items():
            for rpc in rpcs:
                md = method_descriptor(rpc)
                resp = getattr(pb, md.output_type.name)
                methods[rpc] = grpc.unary_unary_rpc_method_handler(
                    self._gated(rpc, feature, resp), request_deserializer=getattr(pb, md.input_type.name).FromString,
                    response_serializer=resp.SerializeToString)
        for rpc in IDENTITY_RPCS:
            md = method_descriptor(rpc)
            methods[rpc] = grpc.unary_unary_rpc_method_handler(
                getattr(self, rpc), request_deserializer=getattr(pb, md.input_type.name).FromString,
                response_serializer=getattr(pb, md.output_type.name).SerializeToString)
        health = grpc.unary_unary_rpc_method_handler(
            _health_check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString)
        return [grpc.method_handlers_generic_handler(COMPUTE_SERVICE, methods),
                grpc.method_handlers_generic_handler(HEALTH_SERVICE, {"Check": health})]


def _health_check(request, context):
    if request.service in ("", COMPUTE_SERVICE):
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %r" % request.service[:200])
