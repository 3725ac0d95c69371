"""spark-submit entry point: table maintenance (see `sparkrec maintain --help`).

spark-submit jobs/maintain.py [--table recommendations] [--retain-hours 168] [--conf conf/local.yaml]
"""

import sys

from sparkrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["maintain", *sys.argv[1:]]))
