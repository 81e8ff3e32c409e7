"""A test driver with every feature group and one marker, whose handlers
fail on request so that the tests can see the SDK's error mapping: the
instance name of CreateInstance picks the failure. get_offers is an
`async def` handler, the others are plain methods."""

import asyncio
import dataclasses
import sys
import time

import drover_driver as dd
from drover_driver import pb


@dataclasses.dataclass
class Config:
    no_volumes: bool = False
    latency_ms: int = dd.setting(0, minimum=0)


def _fail(name):
    if name == "nocap":
        raise dd.NoCapacity("no H100 left in eu-1")
    if name == "wrongcode":
        raise dd.NotFound("CreateInstance may not answer NOT_FOUND")
    if name == "boom":
        raise ValueError("the provider's SDK broke")
    if name == "long":
        raise dd.Unavailable("x" * 10000)
    if name == "utf8":
        raise dd.Unavailable("\u00e9" * 3000)
    if name == "badreturn":
        return "not a message"
    if name == "sleep":
        time.sleep(1.5)
    return None


class Full(dd.Compute, dd.ComputeWithOffers, dd.ComputeWithCreateInstance, dd.ComputeWithPlacementGroups,
           dd.ComputeWithVolumes, dd.ComputeWithGateways, dd.ComputeWithMultinode):
    TYPE, VERSION, DESCRIPTION = "full", "1.2.3", "test driver with every feature"
    Config = Config

    def features_for(self, config, features):
        return features - {dd.Feature.VOLUMES} if config.no_volumes else features

    async def get_offers(self, call, request):
        await asyncio.sleep(call.config.latency_ms / 1000.0)
        return pb.GetOffersResponse(offers=[pb.Offer(instance_type="t1", region="r1", price_per_hour=1.0)])

    def create_instance(self, call, request):
        bad = _fail(request.instance.name)
        if bad is not None:
            return bad
        return pb.CreateInstanceResponse(data=pb.ProvisioningData(instance_id="i-1", state=pb.INSTANCE_STATE_RUNNING))

    def get_instance(self, call, request):
        raise dd.NotFound("no instance %s" % request.instance_id)

    def terminate_instance(self, call, request):
        return None

    def list_instances(self, call, request):
        return pb.ListInstancesResponse()

    def create_placement_group(self, call, request):
        return pb.CreatePlacementGroupResponse()

    def delete_placement_group(self, call, request):
        return None

    def create_volume(self, call, request):
        return pb.CreateVolumeResponse()

    def register_volume(self, call, request):
        return pb.RegisterVolumeResponse()

    def delete_volume(self, call, request):
        return None

    def attach_volume(self, call, request):
        return pb.AttachVolumeResponse(device_name="/dev/vdb")

    def detach_volume(self, call, request):
        return None

    def create_gateway(self, call, request):
        return pb.CreateGatewayResponse()

    def terminate_gateway(self, call, request):
        return None


if __name__ == "__main__":
    sys.exit(dd.main(Full))
