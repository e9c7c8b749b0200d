"""kdns: a cluster DNS server for Kubernetes, answering the Kubernetes DNS-Based Service
Discovery specification (1.1.0) from a live cluster or a snapshot file."""

__version__ = "0.1.0"
