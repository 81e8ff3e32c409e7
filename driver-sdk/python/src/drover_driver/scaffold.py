"""The driver project `python3 -m drover_driver new TYPE` writes."""

import os
import re

__all__ = ["ScaffoldError", "new_project"]


class ScaffoldError(Exception):
    pass


_PYPROJECT = '''[build-system]
requires = ["setuptools>=61", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "drover-driver-{type}"
version = "0.1.0"
description = "drover driver for {type}"
requires-python = ">=3.9"
dependencies = ["drover-driver"]

# Installing the package gives this executable, pinned to the Python it was
# installed with: droverd finds it by its name in a driver directory.
[project.scripts]
drover-driver-{type} = "{module}.driver:main"

[tool.setuptools.packages.find]
where = ["src"]
'''

_DRIVER = '''"""drover-driver-{type}: the {type} backend of drover."""

import dataclasses
from typing import Optional

import drover_driver as dd
from drover_driver import pb

REGIONS = ["{type}-east-1", "{type}-west-1"]
# instance type, cpus, memory MiB, price per hour
CATALOG = [("small", 2, 4096, 0.05), ("large", 16, 65536, 0.40)]


@dataclasses.dataclass
class Config:
    """The backend config operators write (checked by the SDK; its JSON
    Schema is what GetInfo and --info publish)."""
    regions: list[str] = dd.setting(default_factory=lambda: list(REGIONS), description="regions to offer")
    max_offers: int = dd.setting(100, minimum=1, maximum=10000, description="at most this many offers")


@dataclasses.dataclass
class Secrets:
    """Credentials, passed apart from the config and never logged."""
    api_key: Optional[str] = dd.setting(None, description="{type} API key")


class Driver(dd.Compute, dd.ComputeWithOffers):
    TYPE, VERSION = "{type}", "0.1.0"
    DESCRIPTION = "{type} backend"
    Config, Secrets = Config, Secrets

    def validate_config(self, call, diags):
        for i, region in enumerate(call.config.regions):
            if region not in REGIONS:
                diags.error(dd.json_pointer("regions", i), "unknown region", "%r is not one of %s" % (region, REGIONS))

    def get_offers(self, call, request):
        req = request.requirements if request.HasField("requirements") else None
        offers = [pb.Offer(backend_type=self.TYPE, instance_type=name, region=region, price_per_hour=price,
                           resources=pb.Resources(cpus=cpus, memory_mib=mem, cpu_arch="x86_64"),
                           availability=pb.AVAILABILITY_AVAILABLE)
                  for region in call.config.regions for name, cpus, mem, price in CATALOG]
        offers = [o for o in offers if dd.offer_matches(o, req)]
        return pb.GetOffersResponse(offers=sorted(offers, key=lambda o: o.price_per_hour)[:call.config.max_offers])


def main():
    return dd.main(Driver)
'''

_TEST = '''"""Runs drover-conformance against the installed driver (skipped with a
reason when the harness is not found; see drover_driver.testing)."""

import os

from drover_driver.testing import run_conformance

HERE = os.path.dirname(os.path.abspath(__file__))


def test_conformance():
    run_conformance("drover-driver-{type}", config=os.path.join(HERE, "..", "conformance.json"))
'''

_CONFORMANCE = '''{{
  "config": {{}},
  "secrets": {{}},
  "params": {{"invalid_config_field": {{"max_offers": 0}}}}
}}
'''

_README = '''# drover-driver-{type}

A drover driver for the {type} backend, on the Python driver SDK
(drover-driver). Install it next to the SDK, offline:

    pip install --no-index --no-build-isolation .

which gives the executable `drover-driver-{type}`: put a link to it in a
directory of droverd's `drivers.dirs`, or name it in `drivers.commands`.
Check it with the conformance harness:

    DROVER_CONFORMANCE=/path/to/drover/build/bin/drover-conformance python3 -m pytest tests
'''


def new_project(type_name, where=None):
    """Writes the project for backend type `type_name` into `where`
    (default ./TYPE) and returns its path. Refuses to overwrite."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", type_name or ""):
        raise ScaffoldError("backend type %r: use lower-case letters, digits and '-', starting with a letter" %
                            type_name)
    module = "drover_" + type_name.replace("-", "_")
    where = os.path.abspath(where or type_name)
    if os.path.exists(where) and os.listdir(where):
        raise ScaffoldError("%s exists and is not empty" % where)
    files = {"pyproject.toml": _PYPROJECT, "README.md": _README, "conformance.json": _CONFORMANCE,
             os.path.join("src", module, "__init__.py"): '"""drover-driver-{type}."""\n',
             os.path.join("src", module, "driver.py"): _DRIVER, os.path.join("tests", "test_driver.py"): _TEST}
    for rel, template in files.items():
        path = os.path.join(where, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(template.format(type=type_name, module=module))
    return where
