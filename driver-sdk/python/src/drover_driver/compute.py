"""The driver's shape: a `Compute` subclass plus one `ComputeWith…` mixin per
feature it implements. Features are derived from the class, as the C SDK
derives them from the non-NULL members of its ops struct; the SDK answers
UNIMPLEMENTED to every RPC of a feature that is not advertised.

Handlers take `(self, call, request)` and return the response message. They
may be plain methods (run on the thread pool) or `async def` (run on the
SDK's event loop thread)."""

from .protocol import FEATURE_RPCS, MARKERS, Feature, snake

__all__ = ["Compute", "ComputeWithOffers", "ComputeWithCreateInstance", "ComputeWithPlacementGroups",
           "ComputeWithVolumes", "ComputeWithGateways", "ComputeWithMultinode", "ComputeWithReservation",
           "ComputeWithPrivileged", "ComputeWithPrivateGateways", "derive_features", "DefinitionError"]


class DefinitionError(TypeError):
    """A driver class the SDK refuses to serve; the message names the fault."""


class Compute:
    """Base class of every driver. Set TYPE ([a-z0-9-]+), VERSION and
    DESCRIPTION; optionally Config and Secrets (dataclasses, see
    drover_driver.config)."""

    TYPE = ""
    VERSION = "0.0.0"
    DESCRIPTION = ""
    Config = None
    Secrets = None

    def validate_config(self, call, diags):
        """Optional semantic checks after the schema checks passed (regions
        that exist, credentials the provider accepts). Add to `diags`."""

    def features_for(self, config, features):
        """Optional: narrows `features` (a frozenset of Feature) for one
        config. Returned features the class does not have are ignored."""
        return features

    def start(self):
        """Optional: runs once before serving; keep it quick (the handshake waits)."""

    def stop(self):
        """Optional: runs once after the last call returned."""


def _stub(rpc):
    def handler(self, call, request):
        raise NotImplementedError(rpc)

    handler.__name__ = snake(rpc)
    handler.__drover_stub__ = True
    handler.__doc__ = "Serves %s: returns %sResponse. Required by this mixin." % (rpc, rpc)
    return handler


def _mixin(name, feature, doc):
    ns = {"FEATURE": feature, "__doc__": doc, "__module__": __name__}
    for rpc in FEATURE_RPCS.get(feature, ()):
        ns[snake(rpc)] = _stub(rpc)
    return type(name, (), ns)


# One mixin per Feature value of compute.proto; a test proves none is missing.
ComputeWithOffers = _mixin("ComputeWithOffers", Feature.OFFERS, "get_offers")
ComputeWithCreateInstance = _mixin("ComputeWithCreateInstance", Feature.CREATE_INSTANCE,
                                   "create_instance, get_instance, terminate_instance, list_instances")
ComputeWithPlacementGroups = _mixin("ComputeWithPlacementGroups", Feature.PLACEMENT_GROUPS,
                                    "create_placement_group, delete_placement_group")
ComputeWithVolumes = _mixin("ComputeWithVolumes", Feature.VOLUMES,
                            "create_volume, register_volume, delete_volume, attach_volume, detach_volume")
ComputeWithGateways = _mixin("ComputeWithGateways", Feature.GATEWAYS, "create_gateway, terminate_gateway")
ComputeWithMultinode = _mixin("ComputeWithMultinode", Feature.MULTINODE, "marker: instances can form a cluster")
ComputeWithReservation = _mixin("ComputeWithReservation", Feature.RESERVATION,
                                "marker: InstanceConfiguration.reservation is honoured")
ComputeWithPrivileged = _mixin("ComputeWithPrivileged", Feature.PRIVILEGED, "marker: privileged containers")
ComputeWithPrivateGateways = _mixin("ComputeWithPrivateGateways", Feature.PRIVATE_GATEWAYS,
                                    "marker: gateways without a public IP")
MIXINS = (ComputeWithOffers, ComputeWithCreateInstance, ComputeWithPlacementGroups, ComputeWithVolumes,
          ComputeWithGateways, ComputeWithMultinode, ComputeWithReservation, ComputeWithPrivileged,
          ComputeWithPrivateGateways)


def _defined(cls, method):
    fn = getattr(cls, method, None)
    return callable(fn) and not getattr(fn, "__drover_stub__", False)


def derive_features(cls):
    """The sorted features of a driver class. A group is claimed by its mixin
    or by any of its handlers; a claimed group must define every handler.
    Raises DefinitionError naming the first missing one."""
    if isinstance(cls, Compute):
        cls = type(cls)
    features = set()
    for feature, rpcs in FEATURE_RPCS.items():
        methods = [snake(r) for r in rpcs]
        present = [m for m in methods if _defined(cls, m)]
        claimed = any(getattr(m, "FEATURE", None) == feature for m in cls.__mro__)
        if not present and not claimed:
            continue
        missing = [m for m in methods if m not in present]
        if missing:
            raise DefinitionError("%s implements feature %s only partly: it lacks %s (a feature is all of %s, "
                                  "or none)" % (cls.__name__, feature.name, ", ".join(missing), ", ".join(methods)))
        features.add(feature)
    for feature in MARKERS:
        if any(getattr(m, "FEATURE", None) == feature for m in cls.__mro__):
            features.add(feature)
    return sorted(features)
