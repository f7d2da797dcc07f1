"""edgekv next to Redis, etcd and NATS: the same dataset and workloads, one run (issue 14).

adapter.py       what a measured system offers the workloads
edgekv_paths.py  edgekv's paths (gRPC unary, stream, HTTP/Connect, embedded), one adapter each
peers.py         Redis, etcd and NATS JetStream KV, one adapter each
servers.py       their server processes on loopback (and the edgekv node)
measure.py       the workloads, interleaved in rounds, with server and client CPU per op
report.py        bench/results/compare.md, compare.json and the PNG plots
run.py           the command line (python -m bench.compare)
"""
