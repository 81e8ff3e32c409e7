"""drover_driver: write a drover backend driver in Python.

    from dataclasses import dataclass
    import drover_driver as dd
    from drover_driver import pb

    @dataclass
    class Config:
        region: str = "eu-1"

    class AcmeCloud(dd.Compute, dd.ComputeWithOffers):
        TYPE, VERSION = "acmecloud", "0.1.0"
        Config = Config

        def get_offers(self, call, request):
            return pb.GetOffersResponse(offers=[...])

    def main():
        return dd.main(AcmeCloud)

See docs/PYTHON.md in the drover repository.
"""

from . import _deps  # noqa: F401  (first: one clear line when grpcio is missing)
from .compute import (Compute, ComputeWithCreateInstance, ComputeWithGateways, ComputeWithMultinode,
                      ComputeWithOffers, ComputeWithPlacementGroups, ComputeWithPrivateGateways,
                      ComputeWithPrivileged, ComputeWithReservation, ComputeWithVolumes, DefinitionError,
                      derive_features)
from .config import Diagnostics, json_pointer, setting
from .errors import (Aborted, AlreadyExists, Cancelled, DeadlineExceeded, DriverError, FailedPrecondition, Internal,
                     InvalidArgument, InvalidConfig, NoCapacity, NotFound, PermissionDenied, Unauthenticated,
                     Unavailable, Unimplemented)
from .offers import offer_matches
from .protocol import PROTOCOL_VERSION, Feature, pb
from .runtime import main
from .service import Call

__version__ = "0.1.0"

__all__ = ["Compute", "ComputeWithOffers", "ComputeWithCreateInstance", "ComputeWithPlacementGroups",
           "ComputeWithVolumes", "ComputeWithGateways", "ComputeWithMultinode", "ComputeWithReservation",
           "ComputeWithPrivileged", "ComputeWithPrivateGateways", "DefinitionError", "derive_features",
           "Call", "Diagnostics", "setting", "json_pointer", "Feature", "PROTOCOL_VERSION", "pb", "main",
           "offer_matches", "DriverError", "InvalidArgument", "InvalidConfig", "Unauthenticated", "PermissionDenied",
           "NoCapacity", "NotFound", "AlreadyExists", "FailedPrecondition", "Unavailable", "Aborted",
           "DeadlineExceeded", "Cancelled", "Unimplemented", "Internal"]
