"""The argument parser every command line here uses: a bad option is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
