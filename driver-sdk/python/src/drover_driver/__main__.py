"""python3 -m drover_driver new TYPE [--dir DIR]: writes a driver project."""

import argparse
import sys

from .scaffold import ScaffoldError, new_project


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m drover_driver",
                                description="Tools of the drover Python driver SDK.")
    sub = p.add_subparsers(dest="command", required=True)
    n = sub.add_parser("new", help="write a ready-to-run driver project for a backend type",
                       description="Writes a driver project: a package with a Compute class and a config "
                                   "dataclass, the drover-driver-TYPE entry point, a conformance config and a test.")
    n.add_argument("type", metavar="TYPE", help="backend type, [a-z][a-z0-9-]*, e.g. acmecloud")
    n.add_argument("--dir", help="where to write it (default: ./TYPE)")
    args = p.parse_args(argv)
    try:
        where = new_project(args.type, args.dir)
    except ScaffoldError as e:
        print("drover_driver new: %s" % e, file=sys.stderr)
        return 1
    print("wrote %s; next: pip install --no-index --no-build-isolation %s" % (where, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
