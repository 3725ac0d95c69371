"""spark-submit entry point: the nightly stage (see `sparkrec nightly --help`).

spark-submit jobs/nightly.py --date 2010-12-23 [--conf conf/local.yaml] [--set key=value ...]
"""

import sys

from sparkrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["nightly", *sys.argv[1:]]))
