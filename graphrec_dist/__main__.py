import sys

from graphrec_dist.cli import main

sys.exit(main())
