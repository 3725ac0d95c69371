"""spark-submit entry point: the embed stage (see `sparkrec embed --help`).

spark-submit jobs/embed.py --date 2010-12-23 [--conf conf/local.yaml] [--set key=value ...]
"""

import sys

from sparkrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
