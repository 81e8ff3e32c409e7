"""drover-driver-example-python: a drover driver on the Python SDK
(driver-sdk/python). It serves offers only, from a static catalog plus
`synthetic_offers` generated ones for large-response tests and benchmarks,
so it advertises exactly OFFERS and the SDK answers UNIMPLEMENTED to the rest."""

import dataclasses
import functools
import time
from typing import Optional

import drover_driver as dd
from drover_driver import pb

REGIONS = ["py-east-1", "py-west-1", "py-eu-1"]
# type, cpus, memory MiB, disk MiB, arch, (gpu name, memory MiB, vendor, count), price/h, spot price/h
CATALOG = [("py.cpu.small", 2, 4096, 51200, "x86_64", None, 0.042, 0.013),
           ("py.cpu.large", 8, 32768, 102400, "x86_64", None, 0.336, 0.101),
           ("py.arm.medium", 4, 16384, 51200, "arm64", None, 0.136, 0.041),
           ("py.gpu.l4", 8, 32768, 256000, "x86_64", ("L4", 24576, "nvidia", 1), 0.805, 0.322),
           ("py.gpu.a100x2", 24, 174080, 512000, "x86_64", ("A100", 81920, "nvidia", 2), 7.35, None),
           ("py.gpu.mi300x", 96, 1048576, 2048000, "x86_64", ("MI300X", 196608, "amd", 8), 48.0, None)]
SYNTH_CPUS = [2, 4, 8, 16, 32, 64, 96]
SYNTH_GPUS = [None, ("L4", 24576, "nvidia"), ("A10G", 24576, "nvidia"), None, ("H100", 81920, "nvidia"),
              ("MI300X", 196608, "amd")]


def _offer(name, cpus, mem, disk, arch, gpu, region, spot, price, availability=pb.AVAILABILITY_AVAILABLE):
    gpus = [pb.Gpu(name=gpu[0], memory_mib=gpu[1], vendor=gpu[2], count=gpu[3])] if gpu else []
    return pb.Offer(backend_type="example-python", instance_type=name, region=region, zones=[region + "a", region + "b"],
                    resources=pb.Resources(cpus=cpus, memory_mib=mem, gpus=gpus, spot=spot, disk_mib=disk, cpu_arch=arch),
                    price_per_hour=round(price, 4), availability=availability)


# One type is out of quota in one region, as real clouds often are.
STATIC_OFFERS = [_offer(n, c, m, d, a, g, r, spot, p, pb.AVAILABILITY_NO_QUOTA if (n, r) == ("py.gpu.mi300x", "py-eu-1")
                        else pb.AVAILABILITY_AVAILABLE)
                 for n, c, m, d, a, g, price, spot_price in CATALOG for r in REGIONS
                 for spot, p in [(False, price)] + ([(True, spot_price)] if spot_price else [])]


@functools.lru_cache(maxsize=8)
def _synthetic_offers(n, regions):
    """n deterministic, valid offers; cached because building messages is the slow part in Python."""
    offers = []
    for i in range(n):
        cpus, gpu, spot = SYNTH_CPUS[i % len(SYNTH_CPUS)], SYNTH_GPUS[i % len(SYNTH_GPUS)], i % 3 == 2
        count = 1 + (i // len(SYNTH_GPUS)) % 4 if gpu else 0
        price = (0.011 * cpus + (count * gpu[1] / 8192.0 * 0.35 if gpu else 0.0)) * (0.35 if spot else 1.0)
        offers.append(_offer("py.synth.%d" % i, cpus, cpus * 4096, 51200 + 1024 * (i % 64), "x86_64",
                             gpu + (count,) if gpu else None, regions[i % len(regions)], spot,
                             price * (1.0 + (i % 17) / 100.0)))
    return offers


@dataclasses.dataclass
class Config:
    regions: list[str] = dd.setting(default_factory=lambda: list(REGIONS), description="regions to offer")
    synthetic_offers: int = dd.setting(0, minimum=0, maximum=100000,
                                       description="extra generated offers, for benchmarks and large-response tests")
    latency_ms: int = dd.setting(0, minimum=0, maximum=600000,
                                 description="simulated provider latency of every GetOffers, for deadline tests")


@dataclasses.dataclass
class Secrets:
    api_key: Optional[str] = dd.setting(None, description='credentials; the value "invalid" is rejected')


class ExamplePython(dd.Compute, dd.ComputeWithOffers):
    TYPE, VERSION = "example-python", "0.2.0"
    DESCRIPTION = "example driver in Python: a static offer catalog (offers only)"
    Config, Secrets = Config, Secrets

    def validate_config(self, call, diags):
        for i, region in enumerate(call.config.regions):
            if region not in REGIONS:
                diags.error(dd.json_pointer("regions", i), "unknown region", "%r is not one of %s" % (region, REGIONS))
        if call.secrets.api_key == "invalid":
            diags.error("/secrets/api_key", "credentials rejected", "the provider refused this api_key")

    def get_offers(self, call, request):
        end = time.monotonic() + call.config.latency_ms / 1000.0
        while time.monotonic() < end and not call.cancelled:  # short steps: a caller giving up frees the thread
            time.sleep(min(end - time.monotonic(), 0.01))
        regions = tuple(call.config.regions)
        req = request.requirements if request.HasField("requirements") else None
        offers = [o for o in STATIC_OFFERS + _synthetic_offers(call.config.synthetic_offers, regions)
                  if o.region in regions and dd.offer_matches(o, req)]
        if call.cancelled:
            raise dd.DeadlineExceeded("the caller gave up while offers were being listed")
        return pb.GetOffersResponse(offers=sorted(offers, key=lambda o: o.price_per_hour))


def main():
    return dd.main(ExamplePython)
