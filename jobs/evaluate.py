"""spark-submit entry point: the evaluate stage (see `sparkrec evaluate --help`).

spark-submit jobs/evaluate.py --date 2010-12-23 [--conf conf/local.yaml] [--set key=value ...]
"""

import sys

from sparkrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
