"""The pure core: no sockets, no clock, no trio, no kubernetes client.

Everything here is bytes-in, bytes-out or objects-in, records-out, so it is tested without I/O.
"""
