"""One error base for everything kdns reports to a user (as opposed to DNS answers, which are
never exceptions: NXDOMAIN and NODATA are ordinary results)."""


class KdnsError(Exception):
    """An error that ends a command with a message for the user and exit status 2."""

    exit_status = 2
