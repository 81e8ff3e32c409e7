"""Offer filters with the same rules as the C SDK's drv_offer_matches()."""

from .protocol import pb

__all__ = ["offer_matches"]


def _in_range(r, value):
    if r.HasField("min") and value < r.min:
        return False
    if r.HasField("max") and value > r.max:
        return False
    return True


def offer_matches(offer, req):
    """True when `offer` satisfies every filter set in Requirements `req` (None: all)."""
    if req is None:
        return True
    res = offer.resources
    if req.HasField("cpus") and not _in_range(req.cpus, res.cpus):
        return False
    if req.HasField("memory_mib") and not _in_range(req.memory_mib, res.memory_mib):
        return False
    if req.HasField("disk_mib") and not _in_range(req.disk_mib, res.disk_mib):
        return False
    if req.HasField("gpu_count") and not _in_range(req.gpu_count, sum(g.count for g in res.gpus)):
        return False
    if req.HasField("gpu_memory_mib"):
        # Memory of each GPU; an offer without GPUs has none, i.e. 0.
        mems = [g.memory_mib for g in res.gpus] or [0]
        if not all(_in_range(req.gpu_memory_mib, m) for m in mems):
            return False
    if req.gpu_names:
        wanted = {n.lower() for n in req.gpu_names}
        if not res.gpus or not all(g.name.lower() in wanted for g in res.gpus):
            return False
    if req.spot == pb.SPOT_POLICY_ON_DEMAND and res.spot:
        return False
    if req.spot == pb.SPOT_POLICY_SPOT and not res.spot:
        return False
    if req.HasField("max_price") and offer.price_per_hour > req.max_price:
        return False
    if req.regions and offer.region not in req.regions:
        return False
    if req.cpu_archs and res.cpu_arch not in req.cpu_archs:
        return False
    return True
