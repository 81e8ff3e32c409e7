"""The build hook of drover-driver: generates the protocol modules into the
package being built (never into the source tree). Everything else is in
pyproject.toml."""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protogen  # noqa: E402


class BuildWithProtocol(build_py):
    def run(self):
        super().run()
        try:
            protogen.generate(protogen.default_proto_dir(), os.path.join(self.build_lib, "drover_driver", "_proto"))
        except protogen.GenerateError as e:
            sys.exit(str(e))


# A build tree elsewhere (CMake passes its own) keeps build/ and egg-info out
# of the source checkout.
options = {}
if os.environ.get("DROVER_PY_BUILD_DIR"):
    base = os.environ["DROVER_PY_BUILD_DIR"]
    os.makedirs(base, exist_ok=True)
    options = {"build": {"build_base": base}, "egg_info": {"egg_base": base}}

setup(cmdclass={"build_py": BuildWithProtocol}, options=options)
