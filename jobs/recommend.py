"""spark-submit entry point: the recommend stage (see `sparkrec recommend --help`).

spark-submit jobs/recommend.py --date 2010-12-23 [--conf conf/local.yaml] [--set key=value ...]
"""

import sys

from sparkrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["recommend", *sys.argv[1:]]))
