"""`kdns serve --workers N`: N processes answer on the same ports; one follows the cluster.

`supervisor` (the process started: builds the zone, forks, feeds, watches and replaces the
workers), `worker` (a worker process's main), `feed` (the pipes between them).
"""

from kdns.workers.supervisor import WorkerPool

__all__ = ["WorkerPool"]
