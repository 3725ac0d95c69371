"""spark-submit entry point: the clean stage (see `sparkrec clean --help`).

spark-submit jobs/clean.py --date 2010-12-23 [--conf conf/local.yaml] [--set key=value ...]
"""

import sys

from sparkrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["clean", *sys.argv[1:]]))
