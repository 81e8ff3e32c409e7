"""Generates the protocol modules of drover_driver from proto/.

Used by setup.py when the package is built (never at run time), and by the
test that proves an installed package is not stale. The modules are:

- compute_pb2, compute_pb2_grpc, health_pb2, health_pb2_grpc: protoc's own
  output, with the generated grpc modules' flat imports made relative so
  they live inside the package (a top-level `grpc/health/...` would shadow
  the grpc package itself);
- _tables.py: what compute.proto says in comments, as data: the RPCs of
  each feature (the trailing comment of each Feature value) and the status
  codes each RPC may return (the "Codes:" sentence of its response message).
  Reading them from the descriptor's source info keeps one source of truth.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

PROTOS = ["drover/compute/v1/compute.proto", "grpc/health/v1/health.proto"]
GRPC_CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
              "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]


class GenerateError(Exception):
    pass


def default_proto_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("DROVER_PROTO_DIR") or os.path.normpath(os.path.join(here, "..", "..", "proto"))


def _tool(name, debian_package):
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
    if not path:
        raise GenerateError("drover-driver build: %s not found; install Debian's %s" % (name, debian_package))
    return path


def _protoc(args):
    r = subprocess.run([_tool("protoc", "protobuf-compiler")] + args, capture_output=True, text=True)
    if r.returncode != 0:
        raise GenerateError("drover-driver build: protoc %s failed: %s" % (" ".join(args), r.stderr.strip()))


def _relative_imports(path):
    with open(path) as f:
        text = f.read()
    text = re.sub(r"^import (\w+_pb2) as ", r"from . import \1 as ", text, flags=re.M)
    with open(path, "w") as f:
        f.write(text)


def _comment(locations, path):
    for loc in locations:
        if list(loc.path) == path:
            return " ".join((loc.leading_comments + " " + loc.trailing_comments).split())
    return ""


def _tables(descriptor_set_path):
    # Imported here: the build needs protobuf only for this step.
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet()
    with open(descriptor_set_path, "rb") as f:
        fds.ParseFromString(f.read())
    fd = next(f for f in fds.file if f.name.endswith("compute.proto"))
    locs = fd.source_code_info.location
    service = next(s for s in fd.service if s.name == "Compute")
    rpcs = [m.name for m in service.method]

    # FileDescriptorProto field 5 is enum_type, EnumDescriptorProto field 2 is value.
    e_index, feature = next((i, e) for i, e in enumerate(fd.enum_type) if e.name == "Feature")
    feature_rpcs, markers = {}, []
    for v_index, v in enumerate(feature.value):
        if v.number == 0:
            continue
        text = _comment(locs, [5, e_index, 2, v_index])
        if text.startswith("marker"):
            markers.append(v.name)
            continue
        names = [w for w in re.findall(r"[A-Za-z]+", text) if w in rpcs]
        if not names:
            raise GenerateError("compute.proto: %s names neither RPCs nor 'marker' in its comment" % v.name)
        feature_rpcs[v.name] = names

    # FileDescriptorProto field 4 is message_type.
    rpc_codes = {}
    for m in service.method:
        resp = m.output_type.rsplit(".", 1)[-1]
        m_index = next(i for i, msg in enumerate(fd.message_type) if msg.name == resp)
        text = _comment(locs, [4, m_index])
        if "Codes:" not in text:
            raise GenerateError("compute.proto: %s has no 'Codes:' sentence" % resp)
        text = text.split("Codes:", 1)[1]
        rpc_codes[m.name] = [c for c in GRPC_CODES if re.search(r"\b%s\b" % c, text)]
    return rpcs, feature_rpcs, markers, rpc_codes


def generate(proto_dir, out_dir):
    """Writes the generated modules into out_dir (created). Raises GenerateError."""
    for p in PROTOS:
        if not os.path.isfile(os.path.join(proto_dir, p)):
            raise GenerateError("drover-driver build: %s not found under %s (set DROVER_PROTO_DIR to the "
                                "proto/ folder of a drover checkout)" % (p, proto_dir))
    plugin = _tool("grpc_python_plugin", "protobuf-compiler-grpc")
    os.makedirs(out_dir, exist_ok=True)
    for p in PROTOS:
        # Each proto from its own directory, so that the modules are flat.
        d = os.path.join(proto_dir, os.path.dirname(p))
        _protoc(["-I" + d, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
                 "--plugin=protoc-gen-grpc_python=" + plugin, os.path.join(d, os.path.basename(p))])
        _relative_imports(os.path.join(out_dir, os.path.basename(p)[:-6] + "_pb2_grpc.py"))
    with tempfile.TemporaryDirectory() as tmp:
        desc = os.path.join(tmp, "compute.desc")
        d = os.path.join(proto_dir, "drover/compute/v1")
        _protoc(["-I" + d, "--include_source_info", "--descriptor_set_out=" + desc, os.path.join(d, "compute.proto")])
        rpcs, feature_rpcs, markers, rpc_codes = _tables(desc)
    with open(os.path.join(out_dir, "_tables.py"), "w") as f:
        f.write('"""Generated from compute.proto\'s comments by protogen.py. Do not edit."""\n\n')
        f.write("RPCS = %r\n" % (rpcs,))
        f.write("FEATURE_RPCS = %r\n" % (feature_rpcs,))
        f.write("MARKERS = %r\n" % (markers,))
        f.write("RPC_CODES = %r\n" % (rpc_codes,))
    with open(os.path.join(out_dir, "__init__.py"), "w") as f:
        f.write('"""The protocol modules, generated from proto/ when the package was built."""\n')


if __name__ == "__main__":
    try:
        generate(sys.argv[2] if len(sys.argv) > 2 else default_proto_dir(), sys.argv[1])
    except GenerateError as e:
        sys.exit(str(e))
