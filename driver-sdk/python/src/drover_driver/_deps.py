"""Fails a driver that starts on a Python without grpcio or protobuf with one
line naming the interpreter and the fix, instead of a traceback that ends in
"No module named 'grpc'"."""

import os
import sys

# gRPC core writes plain-text lines of its own to stderr; a driver logs JSON
# lines only, and reports the errors that matter itself.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

try:
    import grpc  # noqa: F401
    import google.protobuf  # noqa: F401
except ImportError as e:
    raise SystemExit(
        "drover-driver: the Python at %s cannot import %r (%s); run the driver with a Python that has "
        "grpcio and protobuf: on Debian install python3-grpcio and python3-protobuf and use /usr/bin/python3, "
        "or a venv made with '/usr/bin/python3 -m venv --system-site-packages'"
        % (sys.executable, e.name or "grpc", e)) from None
