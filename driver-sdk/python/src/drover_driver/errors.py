"""Exceptions a handler raises to answer with a status code. The code of each
class is the one table of the Python SDK mapping errors to gRPC status codes
(the C SDK's is driver-sdk/src/status.c); each RPC's own table in
compute.proto says which of them it may return."""

import grpc

__all__ = ["DriverError", "InvalidArgument", "InvalidConfig", "Unauthenticated", "PermissionDenied", "NoCapacity",
           "NotFound", "AlreadyExists", "FailedPrecondition", "Unavailable", "Aborted", "DeadlineExceeded",
           "Cancelled", "Unimplemented", "Internal", "MAX_MESSAGE_BYTES", "cap_message"]

# A status message travels in an HTTP/2 header block; a host drops the whole
# connection on a block over its limit, so messages are cut as the C SDK cuts
# them (driver-sdk/src/serve.c).
MAX_MESSAGE_BYTES = 2048


def cap_message(msg):
    """`msg` cut to MAX_MESSAGE_BYTES of UTF-8, on a character boundary."""
    raw = msg.encode("utf-8", "replace")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return msg
    cut = raw[:MAX_MESSAGE_BYTES - 32].decode("utf-8", "ignore")
    return "%s... (%d bytes cut)" % (cut, len(raw) - len(cut.encode("utf-8")))


class DriverError(Exception):
    """Base class: raise a subclass, or DriverError(message, code=...)."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = str(message)
        if code is not None:
            self.code = code


def _error(name, status, doc):
    return type(name, (DriverError,), {"code": status, "__doc__": doc})


InvalidArgument = _error("InvalidArgument", grpc.StatusCode.INVALID_ARGUMENT, "The request is wrong; do not retry.")
InvalidConfig = _error("InvalidConfig", grpc.StatusCode.INVALID_ARGUMENT, "The backend config is wrong.")
Unauthenticated = _error("Unauthenticated", grpc.StatusCode.UNAUTHENTICATED,
                         "Credentials are missing or the provider rejected them.")
PermissionDenied = _error("PermissionDenied", grpc.StatusCode.PERMISSION_DENIED,
                          "Credentials are valid but not allowed to do this.")
NoCapacity = _error("NoCapacity", grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "No capacity or quota for this offer now; the server tries the next offer.")
NotFound = _error("NotFound", grpc.StatusCode.NOT_FOUND, "The named object does not exist at the provider.")
AlreadyExists = _error("AlreadyExists", grpc.StatusCode.ALREADY_EXISTS,
                       "The idempotency key or name was used with an incompatible request.")
FailedPrecondition = _error("FailedPrecondition", grpc.StatusCode.FAILED_PRECONDITION,
                            "The object is not in a state that allows this.")
Unavailable = _error("Unavailable", grpc.StatusCode.UNAVAILABLE, "Transient failure; the caller retries with backoff.")
Aborted = _error("Aborted", grpc.StatusCode.ABORTED, "Not done yet; the caller retries later.")
DeadlineExceeded = _error("DeadlineExceeded", grpc.StatusCode.DEADLINE_EXCEEDED, "The call's deadline passed.")
Cancelled = _error("Cancelled", grpc.StatusCode.CANCELLED, "The caller gave up.")
Unimplemented = _error("Unimplemented", grpc.StatusCode.UNIMPLEMENTED, "Not supported for this config.")
Internal = _error("Internal", grpc.StatusCode.INTERNAL, "A driver bug.")
