#!/usr/bin/env python3
"""`npusim record` from a checkout: same as the installed console command (see --help)."""
import sys

from perfmodel.cli import main

if __name__ == "__main__":
    sys.exit(main(["record", *sys.argv[1:]]))
