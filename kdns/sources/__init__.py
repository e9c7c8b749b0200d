"""Where cluster objects come from: a snapshot file, or (later) the live API."""
