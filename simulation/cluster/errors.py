"""What can stop the local cluster."""

from __future__ import annotations


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the cluster (not root, no `ip`, no network namespaces); says why."""


class ClusterError(RuntimeError):
    """A step of the cluster failed; the message carries the step's own output."""
