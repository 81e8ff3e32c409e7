"""Feature derivation from the driver class."""

import pytest

import drover_driver as dd
from drover_driver import compute
from drover_driver.protocol import FEATURE_RPCS, Feature, snake


def test_one_mixin_per_feature():
    assert sorted(m.FEATURE for m in compute.MIXINS) == sorted(Feature)
    for mixin in compute.MIXINS:
        expected = "ComputeWith" + "".join(w.capitalize() for w in mixin.FEATURE.name.split("_"))
        assert mixin.__name__ == expected
        for rpc in FEATURE_RPCS.get(mixin.FEATURE, ()):
            assert hasattr(mixin, snake(rpc))


def test_nothing_advertised_by_the_base_class():
    class Bare(dd.Compute):
        TYPE = "bare"

    assert dd.derive_features(Bare) == []


def test_features_from_mixins_and_methods():
    class Offers(dd.Compute, dd.ComputeWithOffers, dd.ComputeWithPrivileged):
        def get_offers(self, call, request):
            pass

    assert dd.derive_features(Offers) == [Feature.OFFERS, Feature.PRIVILEGED]

    # A handler without its mixin counts too: the methods are the implementation.
    class Plain(dd.Compute):
        def create_gateway(self, call, request):
            pass

        def terminate_gateway(self, call, request):
            pass

    assert dd.derive_features(Plain) == [Feature.GATEWAYS]


def test_partial_group_refused_naming_the_missing_method():
    class Half(dd.Compute, dd.ComputeWithCreateInstance):
        def create_instance(self, call, request):
            pass

        def get_instance(self, call, request):
            pass

    with pytest.raises(dd.DefinitionError) as e:
        dd.derive_features(Half)
    assert "terminate_instance, list_instances" in str(e.value)
    assert "CREATE_INSTANCE" in str(e.value)


def test_mixin_with_no_method_refused():
    class Claimed(dd.Compute, dd.ComputeWithVolumes):
        pass

    with pytest.raises(dd.DefinitionError, match="create_volume"):
        dd.derive_features(Claimed)


def test_stray_handler_refused():
    class Stray(dd.Compute):
        def detach_volume(self, call, request):
            pass

    with pytest.raises(dd.DefinitionError, match="lacks create_volume, register_volume, delete_volume, attach_volume"):
        dd.derive_features(Stray)


def test_subclass_inherits_handlers():
    class Base(dd.Compute, dd.ComputeWithOffers):
        def get_offers(self, call, request):
            pass

    class Child(Base, dd.ComputeWithMultinode):
        pass

    assert dd.derive_features(Child) == [Feature.OFFERS, Feature.MULTINODE]
