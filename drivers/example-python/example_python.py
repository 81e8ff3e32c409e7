"""drover-driver-example-python: a drover driver written in Python.

It proves the driver protocol is language-neutral: the same proto, served by
Debian's python3-grpcio, passes the same conformance suite as the C drivers.
The provider implements only offers, so it advertises exactly FEATURE_OFFERS
(derived by drover_driver from the handlers this class defines) and answers
UNIMPLEMENTED to everything else.

Offers come from a small static catalog, plus `synthetic_offers` generated
ones so benchmarks and the conformance suite can ask for 1,000 or 10,000.
"""

import functools
import sys
import time

import grpc

import drover_driver as dd
from drover_driver import pb

BACKEND_TYPE = "example-python"
REGIONS = ["py-east-1", "py-west-1", "py-eu-1"]

# instance type, cpus, memory MiB, disk MiB, arch, (gpu name, memory MiB, vendor, count) or None,
# on-demand price/hour, spot price/hour or None.
CATALOG = [
    ("py.cpu.small", 2, 4096, 51200, "x86_64", None, 0.042, 0.013),
    ("py.cpu.large", 8, 32768, 102400, "x86_64", None, 0.336, 0.101),
    ("py.arm.medium", 4, 16384, 51200, "arm64", None, 0.136, 0.041),
    ("py.gpu.l4", 8, 32768, 256000, "x86_64", ("L4", 24576, "nvidia", 1), 0.805, 0.322),
    ("py.gpu.a100x2", 24, 174080, 512000, "x86_64", ("A100", 81920, "nvidia", 2), 7.35, None),
    ("py.gpu.mi300x", 96, 1048576, 2048000, "x86_64", ("MI300X", 196608, "amd", 8), 48.0, None),
]

SYNTH_CPUS = [2, 4, 8, 16, 32, 64, 96]
SYNTH_GPUS = [None, ("L4", 24576, "nvidia"), ("A10G", 24576, "nvidia"), None, ("H100", 81920, "nvidia"),
              ("MI300X", 196608, "amd")]


def _offer(instance_type, cpus, mem, disk, arch, gpu, region, spot, price, availability):
    gpus = []
    if gpu:
        gpus.append(pb.Gpu(name=gpu[0], memory_mib=gpu[1], vendor=gpu[2], count=gpu[3]))
    return pb.Offer(
        backend_type=BACKEND_TYPE, instance_type=instance_type,
        resources=pb.Resources(cpus=cpus, memory_mib=mem, gpus=gpus, spot=spot, disk_mib=disk, cpu_arch=arch),
        region=region, zones=[region + "a", region + "b"], price_per_hour=round(price, 4),
        availability=availability)


def _static_offers():
    offers = []
    for name, cpus, mem, disk, arch, gpu, price, spot_price in CATALOG:
        for region in REGIONS:
            # One type is out of quota in one region, as real clouds often are.
            availability = (pb.AVAILABILITY_NO_QUOTA if (name, region) == ("py.gpu.mi300x", "py-eu-1")
                            else pb.AVAILABILITY_AVAILABLE)
            offers.append(_offer(name, cpus, mem, disk, arch, gpu, region, False, price, availability))
            if spot_price is not None:
                offers.append(_offer(name, cpus, mem, disk, arch, gpu, region, True, spot_price, availability))
    return offers


STATIC_OFFERS = _static_offers()


@functools.lru_cache(maxsize=8)
def _synthetic_offers(n, regions):
    """n deterministic, valid offers spread over `regions`; cached because
    building protobuf messages is the slow part in Python."""
    offers = []
    for i in range(n):
        cpus = SYNTH_CPUS[i % len(SYNTH_CPUS)]
        gpu = SYNTH_GPUS[i % len(SYNTH_GPUS)]
        count = 1 + (i // len(SYNTH_GPUS)) % 4 if gpu else 0
        spot = i % 3 == 2
        price = 0.011 * cpus + (count * gpu[1] / 8192.0 * 0.35 if gpu else 0.0)
        price = price * (0.35 if spot else 1.0) * (1.0 + (i % 17) / 100.0)
        offers.append(_offer("py.synth.%d" % i, cpus, cpus * 4096, 51200 + 1024 * (i % 64), "x86_64",
                             (gpu[0], gpu[1], gpu[2], count) if gpu else None, regions[i % len(regions)],
                             spot, price, pb.AVAILABILITY_AVAILABLE))
    return offers


class ExamplePython(dd.Provider):
    TYPE = BACKEND_TYPE
    VERSION = "0.1.0"
    DESCRIPTION = "example driver in Python: a static offer catalog (offers only)"
    CONFIG_FIELDS = [
        dd.Field("regions", dd.STRING_ARRAY,
                 "regions to offer (default: all of %s)" % ", ".join(REGIONS)),
        dd.Field("synthetic_offers", dd.INTEGER,
                 "number of extra generated offers, for benchmarks and large-response tests",
                 default=0, minimum=0, maximum=100000),
        dd.Field("latency_ms", dd.INTEGER,
                 "simulated provider latency added to every GetOffers, for deadline tests",
                 default=0, minimum=0, maximum=600000),
        dd.Field("api_key", dd.STRING, "credentials; the value \"invalid\" is rejected", secret=True),
    ]

    def validate(self, config, diags):
        for i, region in enumerate(config.get("regions", [])):
            if region not in REGIONS:
                diags.error(dd.json_pointer("regions", i), "unknown region",
                            "%r is not one of %s" % (region, ", ".join(REGIONS)))
        if config.secrets.get("api_key") == "invalid":
            diags.error(dd.json_pointer("secrets", "api_key"), "credentials rejected",
                        "the provider refused this api_key")

    def get_offers(self, call, request):
        self._simulate_latency(call)
        regions = tuple(call.config.get("regions") or REGIONS)
        candidates = [o for o in STATIC_OFFERS if o.region in regions]
        candidates += _synthetic_offers(call.config.get("synthetic_offers"), regions)
        req = request.requirements if request.HasField("requirements") else None
        matching = [o for o in candidates if dd.offer_matches(o, req)]
        matching.sort(key=lambda o: o.price_per_hour)
        self._check_cancelled(call)
        return pb.GetOffersResponse(offers=matching)

    @staticmethod
    def _check_cancelled(call):
        if call.cancelled():
            left = call.time_left()
            code = grpc.StatusCode.DEADLINE_EXCEEDED if left is not None and left <= 0 else grpc.StatusCode.CANCELLED
            raise dd.DriverError(code, "the caller gave up while offers were being listed")

    def _simulate_latency(self, call):
        # Sleep in short steps so a cancelled or expired call frees its thread at once.
        end = time.monotonic() + call.config.get("latency_ms") / 1000.0
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self._check_cancelled(call)
            time.sleep(min(left, 0.01))


if __name__ == "__main__":
    sys.exit(dd.main(ExamplePython()))
