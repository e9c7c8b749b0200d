"""`python -m kdns.workers FEED_FD REPORT_FD`: a worker spawned in place of one that ended."""

import sys

from kdns.workers.worker import spawned

sys.exit(spawned(sys.argv[1:]))
