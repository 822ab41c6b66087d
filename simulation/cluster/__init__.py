"""A real two-node Ray cluster on one machine, in network namespaces (root): `harness.LocalCluster`
runs it, `failover` kills a node under a streaming device and reports from the cluster's events
(`events`), `cli` is `python -m simulation.cluster`."""
