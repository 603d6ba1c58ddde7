"""The cluster name: controllers and nodes only talk within one (mDNS, status, apply)."""

DEFAULT_CLUSTER = "default"
"""The cluster of a controller or node started without `--cluster`."""
