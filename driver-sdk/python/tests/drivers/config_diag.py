"""The Python twin of tests/fixtures/drivers/config-diag.c: the same config
fields and secrets, declared as dataclasses, for the shared table
tests/fixtures/config-diagnostics.json."""

import dataclasses
import sys
from typing import Literal, Optional

import drover_driver as dd
from drover_driver import pb


@dataclasses.dataclass
class Config:
    region: str = dd.setting(description="where machines are made")
    tier: Literal["basic", "pro"] = "basic"
    capacity: int = dd.setting(8, minimum=1, maximum=64)
    ratio: Optional[float] = dd.setting(None, maximum=1.5)
    spot: Optional[bool] = None
    zones: Optional[list[str]] = None


@dataclasses.dataclass
class Secrets:
    api_key: str
    proxy_password: Optional[str] = None


class ConfigDiag(dd.Compute, dd.ComputeWithOffers):
    TYPE, VERSION = "config-diag", "1.0.0"
    Config, Secrets = Config, Secrets

    def get_offers(self, call, request):
        return pb.GetOffersResponse()


if __name__ == "__main__":
    sys.exit(dd.main(ConfigDiag))
