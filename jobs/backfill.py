"""spark-submit entry point: the backfill stage (see `sparkrec backfill --help`).

spark-submit jobs/backfill.py --from 2010-12-01 --to 2010-12-23 [--conf conf/local.yaml] [--set key=value ...]
"""

import sys

from sparkrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["backfill", *sys.argv[1:]]))
