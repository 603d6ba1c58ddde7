"""The etcd v3 client the controller keeps its state and leader election on.

`EtcdClient` speaks etcd's gRPC API (synchronous, every member tried in turn);
`PrefixMirror` keeps a prefix in memory, current by a watch; `LeaderElection`
holds a leader key on a lease.
"""
