"""skinserve: the library every stage shares (labels, data, registry, storage, command line)."""

__version__ = "0.1.0"
