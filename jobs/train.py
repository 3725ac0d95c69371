"""spark-submit entry point: the train stage (see `sparkrec train --help`).

spark-submit jobs/train.py --date 2010-12-23 [--conf conf/local.yaml] [--set key=value ...]
"""

import sys

from sparkrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
