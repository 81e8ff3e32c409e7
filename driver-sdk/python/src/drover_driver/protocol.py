"""The protocol as the generated modules describe it: messages, services,
and the constants the SDK needs, all read from the descriptors (and from
compute.proto's comments, through _tables), so that nothing here can drift
from proto/ or from the C SDK built from the same files."""

import enum

import grpc

from ._proto import _tables
from ._proto import compute_pb2 as pb
from ._proto import compute_pb2_grpc as pb_grpc
from ._proto import health_pb2, health_pb2_grpc

__all__ = ["pb", "pb_grpc", "health_pb2", "health_pb2_grpc", "Feature", "PROTOCOL_VERSION", "COMPUTE_SERVICE",
           "HEALTH_SERVICE", "FEATURE_RPCS", "MARKERS", "IDENTITY_RPCS", "RPC_CODES", "snake"]

# FEATURE_OFFERS -> Feature.OFFERS, with the wire numbers of the proto.
Feature = enum.IntEnum("Feature", {v.name[len("FEATURE_"):]: v.number
                                   for v in pb.Feature.DESCRIPTOR.values if v.number != 0})
PROTOCOL_VERSION = max(v.number for v in pb.ProtocolVersion.DESCRIPTOR.values)
COMPUTE_SERVICE = pb.DESCRIPTOR.services_by_name["Compute"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

# Feature -> its RPC names, in proto order; markers have none.
FEATURE_RPCS = {Feature[name[len("FEATURE_"):]]: tuple(rpcs) for name, rpcs in _tables.FEATURE_RPCS.items()}
MARKERS = tuple(Feature[name[len("FEATURE_"):]] for name in _tables.MARKERS)
_gated = {rpc for rpcs in FEATURE_RPCS.values() for rpc in rpcs}
IDENTITY_RPCS = tuple(rpc for rpc in _tables.RPCS if rpc not in _gated)
# RPC name -> the gRPC status codes its response's comment allows.
RPC_CODES = {rpc: frozenset(grpc.StatusCode[c] for c in codes) for rpc, codes in _tables.RPC_CODES.items()}


def snake(rpc):
    """GetOffers -> get_offers: the handler method name of an RPC."""
    return "".join("_" + c.lower() if c.isupper() else c for c in rpc).lstrip("_")


def method_descriptor(rpc):
    return pb.DESCRIPTOR.services_by_name["Compute"].methods_by_name[rpc]
