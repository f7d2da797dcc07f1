"""Read latency at a node while anti-entropy repairs it, against the same node idle.

Run: .venv/bin/python -m bench.e2e.repair [--keys 100000] [--value-bytes 24576] [--samples 5000]
     [--antientropy-bytes-per-s N]  (default: the cluster file's default pace)
     [--antientropy-min-bytes-per-s N]  (the pace again: a fixed pace, as before it yielded)

Two nodes on loopback. Their data directories are filled offline: fra-1 holds
--keys keys of --value-bytes each (its log trimmed, so only anti-entropy can
move them), and both hold 1,000 small probe keys. Then:

* idle: iad-1 runs alone (its peer is down, so nothing is repaired); one client
  reads probe keys at iad-1 (--samples reads);
* repair: fra-1 starts; anti-entropy moves every big key to iad-1 in
  byte-bounded pages, while the same client keeps reading probe keys at iad-1
  until both nodes' digests are equal;
* idle after: the same client reads another --samples probe keys at iad-1, which
  now holds the repaired data (fra-1 up, nothing left to repair).

Prints p50/p99/p999, reads per second, iad-1's CPU per read and the machine's
1-minute load average for each phase, the p99 ratio (goal: repair within 2x
of idle; against idle after too, as a check of the noise other work on the
machine adds) and the repair time and rate.

iad-1 is pinned to CPU 1 (every thread: the event loop, the repair's worker
thread, RocksDB's flushes and compactions, gRPC's), fra-1, the client and the
bench to CPU 0, when the machine has two CPUs. The client reads from a process
of its own, so nothing else the bench does shares its GIL. fra-1 stands for a
PoP on another machine, but here it shares CPU 0 with the client: sending a
repair at 16 MB/s, it kept the client's reads waiting for the CPU (read p99
"idle after", fra-1 up and idle, was 1.7-2.2 ms with it at the client's
priority, 1.1 ms at nice 19). So every thread of fra-1 runs at nice
--peer-nice (default 19; 0: as before), and the client gets CPU 0 when it
needs it. Reads during repair include the CPU iad-1 spends applying records,
so the CPU per read is a cost of the repair, not of the reads. Each phase also
prints iad-1's own time per read, from its request metrics: what it leaves out
is the time a read waits outside the handler. --read-over http reads through
the HTTP door instead of the gRPC port.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from bench.e2e.load import percentiles, pin_all
from bench.e2e.replication import digests_equal
from edgekv import Client
from edgekv.limits import DEFAULT_ANTIENTROPY_BYTES_PER_S
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45))
NODES = (("fra-1", "eu-west"), ("iad-1", "us-east"))
PROBES = 1000


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(address: str, prefix: str | tuple[str, ...]) -> dict[str, float]:
    """Samples of the metrics named ``prefix``... at a node's ``metrics_listen`` address."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name.startswith(prefix)
    }


def preload(config: Path, keys: int, value_bytes: int) -> None:
    """fra-1: ``keys`` big keys plus the probes; iad-1: the probes only. Logs trimmed."""
    from edgekv.cluster.placement import PlacementRules
    from edgekv.config.loader import load_config
    from edgekv.storage.engine import Engine, EngineSettings, PutOp

    cfg = load_config(config)
    rules = PlacementRules.from_config(cfg)
    settings = EngineSettings(
        placement_of=rules.placement_of, placement_fingerprint=rules.fingerprint()
    )
    a = Engine(cfg.node("fra-1").data_dir, "fra-1", settings)
    b = Engine(cfg.node("iad-1").data_dir, "iad-1", settings)
    a.write([PutOp(b"probe/%04d" % i, b"p" * 100) for i in range(PROBES)])
    b.apply_many((e.key, e.record) for e in a.read_log(a.first_log_seq(), PROBES))
    for start in range(0, keys, 100):
        a.write(
            [
                PutOp(b"big/%08d" % i, os.urandom(16) * (value_bytes // 16))
                for i in range(start, min(keys, start + 100))
            ]
        )
        a.trim_log(a.last_seq + 1)  # only anti-entropy may move these
    a.close()
    b.close()


class Reader:
    """One client reading probe keys at a node, in its own process, until stopped.

    A process of its own, so that nothing the bench does meanwhile (polling
    the digests, counting) holds the reads' GIL: the figures are the node's.
    """

    def __init__(self, endpoint: str, cpu: int, transport: str = "unary", rate: float = 0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.e2e.repair", "--read-from", endpoint,
             "--transport", transport, "--rate", str(rate)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        self._cpu = cpu

    def _ask(self, command: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._proc.stdout.readline()

    def start(self) -> None:
        self._ask("count")  # the client is connected and reading
        pin_all(self._proc.pid, self._cpu)

    def count(self) -> int:
        """Reads timed since the last ``take``."""
        return int(self._ask("count"))

    def take(self) -> list[float]:
        """The read latencies (us) timed since the last ``take``, and start again."""
        return [us for _, us in self.take_timed()]

    def take_timed(self) -> list[tuple[float, float]]:
        """(time.monotonic() at its end, latency us) of each read since the last ``take``."""
        return [(float(t), float(us)) for t, us in json.loads(self._ask("take"))]

    def wait_for(self, n: int) -> None:
        while self.count() < n:
            time.sleep(0.05)

    def stop(self) -> None:
        self._ask("stop")
        self._proc.wait(30)


def read_forever(endpoint: str, transport: str, rate: float) -> None:
    """The reader process: time gets of probe keys; answer count/take/stop on stdin.

    ``rate`` 0: one get after another (closed loop). Else gets start at
    Poisson arrivals of ``rate`` a second (open loop); a get that starts late
    because the one before ran long is timed from when it should have started,
    so a stall counts against every read it delayed (no coordinated omission).
    """
    samples: list[tuple[float, float]] = []  # (monotonic s at the end, us)
    lock = threading.Lock()
    stopping = threading.Event()

    def read() -> None:
        rnd = random.Random(7)
        over_http = endpoint.startswith("http")
        due = time.perf_counter_ns()
        with Client(endpoint, discover=False, transport=None if over_http else transport) as client:
            while not stopping.is_set():
                key = b"probe/%04d" % rnd.randrange(PROBES)
                t0 = time.perf_counter_ns()
                if rate:
                    due += int(rnd.expovariate(rate) * 1e9)
                    if due > t0:  # on time: wait, and time the get from its start
                        time.sleep((due - t0) / 1e9)
                        t0 = time.perf_counter_ns()
                    else:  # behind: the wait for the get before counts
                        t0 = due
                entry = client.get(key)
                elapsed_us = (time.perf_counter_ns() - t0) / 1000.0
                assert entry is not None
                with lock:
                    samples.append((time.monotonic(), elapsed_us))

    reader = threading.Thread(target=read)
    reader.start()
    for line in sys.stdin:
        command = line.strip()
        while command == "count" and not samples and reader.is_alive():
            time.sleep(0.01)  # the first answer says the client reads
        with lock:
            taken = samples[:] if command == "take" else []
            if command == "take":
                samples.clear()
            count = len(samples)
        if command == "stop":
            break
        answer = [(round(t, 4), round(us, 1)) for t, us in taken]
        print(json.dumps(answer) if command == "take" else count, flush=True)
    stopping.set()  # "stop", or the bench went away (end of input)
    reader.join(30)
    print("stopped", flush=True)


def nice_all(pid: int, nice: int) -> None:
    """Set the nice value of every thread of process ``pid`` (Linux: nice is per thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)


def report(
    name: str, samples_us: list[float], seconds: float, cpu: float | None
) -> dict[str, float]:
    p = percentiles(samples_us)
    ops = len(samples_us) / seconds
    per_read = "" if cpu is None else f"iad-1 CPU {cpu / len(samples_us) * 1e6:7.1f} us/read  "
    print(f"{name:<30} p50 {p['p50']:8.1f} us  p99 {p['p99']:8.1f} us  p999 {p['p999']:8.1f} us  "
          f"{ops:7.0f} reads/s  {per_read}load {os.getloadavg()[0]:.1f}")  # fmt: skip
    return {**p, "ops": ops}


PAUSE_S = 0.6  # fra-1 stopped this long each time (--pause-every)
PAUSE_SETTLE_S = 0.1  # reads this soon after a stop are in neither window (slices in flight)


def pause(pid: int) -> tuple[float, float]:
    """Stop process ``pid`` for PAUSE_S; the (from, to) monotonic window, after it settled."""
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE_SETTLE_S)
        start = time.monotonic()
        time.sleep(PAUSE_S)
        return start, time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)


def split_by_pauses(
    timed: list[tuple[float, float]], paused: list[tuple[float, float]]
) -> tuple[list[float], list[float]]:
    """Latencies of reads while fra-1 ran, and of reads in its pauses (settling: neither)."""
    running: list[float] = []
    in_pause: list[float] = []
    starts = [a - PAUSE_SETTLE_S for a, _ in paused]  # in time order, not overlapping
    for t, us in timed:
        i = bisect.bisect_right(starts, t) - 1  # the last pause that began (settling) by t
        if i < 0 or t >= paused[i][1]:
            running.append(us)
        elif t >= paused[i][0]:
            in_pause.append(us)
    return running, in_pause


# The node's latency histogram of KV.Get, per door: (series, label of the Get calls).
HANDLER_SERIES = {
    "grpc": ("edgekv_request_duration_seconds_bucket", 'method="Get"'),
    "http": ("edgekv_http_request_duration_seconds_bucket", 'route="/edgekv.v1.KV/Get"'),
}


def handler_buckets(address: str, door: str) -> dict[float, float]:
    """iad-1's cumulative counts of KV.Get calls by its own time (le bound, seconds).

    The node times a call from its interceptor (gRPC) or its request's arrival
    (HTTP) to its answer: what a read waits before (gRPC's threads, the event
    loop's queue) or after is not in it.
    """
    series, label = HANDLER_SERIES[door]
    got = scrape(address, series)
    return {
        float(name.split('le="')[1].split('"')[0]): value
        for name, value in got.items()
        if label in name
    }


def report_handler(before: dict[float, float], after: dict[float, float]) -> None:
    """The bound within which 99% of the phase's reads were served inside iad-1
    (the repair's figures include the reads in fra-1's pauses)."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = counts[-1][1]
    within = next((b for b, n in counts if n >= 0.99 * total), float("inf"))
    over_ms = total - next((n for b, n in counts if b >= 0.001), total)
    print(
        f"    iad-1's own time per read (its metrics): 99% within {within * 1000:g} ms, "
        f"{over_ms:.0f} of {total:.0f} over 1 ms"
    )


def report_traffic(metrics_at: dict[str, str], total_mb: float) -> None:
    """What anti-entropy moved through each node (a record sent twice counts twice)."""
    for node_id, address in metrics_at.items():
        got = scrape(address, ("edgekv_antientropy_", "edgekv_event_loop_"))
        records = ", ".join(
            f"{name.split('{')[1][:-1]} {value:.0f}"
            for name, value in got.items()
            if name.startswith("edgekv_antientropy_repaired_records_total")
        )
        probes = got.get("edgekv_event_loop_probes_total", 0.0)
        late = got.get("edgekv_event_loop_late_probes_total", 0.0)
        print(
            f"  {node_id}: anti-entropy moved {got['edgekv_antientropy_bytes_total'] / 1e6:.0f} MB "
            f"for {total_mb:.0f} MB of data, waited "
            f"{got['edgekv_antientropy_paced_seconds_total']:.1f} s for its pace; {records}\n"
            f"    pace cut {got.get('edgekv_antientropy_pace_cuts_total', 0):.0f} times, now "
            f"{got.get('edgekv_antientropy_pace_bytes_per_second', 0) / 1e6:.1f} MB/s; "
            f"event loop late in {late:.0f} of {probes:.0f} probes "
            f"({100 * late / max(probes, 1):.1f}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=24 * 1024)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument(
        "--pause-every", type=float, default=0.0, metavar="S",
        help="stop fra-1 for 0.6 s every S s of the repair, and compare reads in those pauses "
        "with reads while it repairs, interleaved (the ratio then hardly moves with the load)",
    )  # fmt: skip
    parser.add_argument(
        "--antientropy-min-bytes-per-s", type=int, default=None,
        help="replication.antientropy_min_bytes_per_s, the floor of the yielding pace "
        "(the pace given: a fixed pace; default: the cluster file's default)",
    )  # fmt: skip
    parser.add_argument(
        "--peer-nice", type=int, default=19,
        help="nice value of every thread of fra-1, which shares CPU 0 with the client "
        "(default 19: it stands for a PoP on another machine; 0: the client's priority)",
    )  # fmt: skip
    parser.add_argument(
        "--read-over", choices=("grpc", "http"), default="grpc",
        help="the door the client reads through: the gRPC port (the SDK's default) or "
        "the HTTP door (Client over http://, the SDK's HTTP/1.1 pool)",
    )  # fmt: skip
    parser.add_argument(
        "--transport", choices=("unary", "stream"), default="unary",
        help="over the gRPC port: unary Get calls (the blocking Client's default) or "
        "operations of one KV.Stream (transport=\"stream\", the AsyncClient's default)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float, default=0.0, metavar="N",
        help="reads a second, at Poisson arrivals (open loop; a late read is timed from "
        "when it was due); default 0: one client reading as fast as it can (closed loop)",
    )  # fmt: skip
    parser.add_argument("--read-from", help=argparse.SUPPRESS)  # the reader process
    parser.add_argument(
        "--antientropy-bytes-per-s", type=int, default=None,
        help="replication.antientropy_bytes_per_s (default: the cluster file's default)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.read_from:
        read_forever(args.read_from, args.transport, args.rate)
        return
    # A SIGTERM (kill, a CI timeout) unwinds like Ctrl-C: the nodes and the reader
    # are stopped and the 2.5 GB temporary directory removed, not left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    replication = {"antientropy_interval_s": 3600, "heartbeat_interval_s": 0.5}
    if args.antientropy_bytes_per_s is not None:
        replication["antientropy_bytes_per_s"] = args.antientropy_bytes_per_s
    if args.antientropy_min_bytes_per_s is not None:
        replication["antientropy_min_bytes_per_s"] = args.antientropy_min_bytes_per_s
    total_mb = args.keys * args.value_bytes / 1e6
    pace = args.antientropy_bytes_per_s or DEFAULT_ANTIENTROPY_BYTES_PER_S
    print(
        f"machine: {os.cpu_count()} CPUs; iad-1 on CPU 1, fra-1, the client and the bench "
        f"on CPU 0 (every thread), fra-1 at nice {args.peer_nice}; reads over {args.read_over}"
        f"{'' if args.read_over == 'http' else ' (' + args.transport + ')'}, "
        f"{f'{args.rate:g} a second (open loop)' if args.rate else 'one after another'};\n"
        f"repairing {args.keys} keys of {args.value_bytes} bytes ({total_mb:.0f} MB); "
        f"antientropy_bytes_per_s {pace} ({pace / 1e6:.1f} MB/s), "
        f"antientropy_min_bytes_per_s {args.antientropy_min_bytes_per_s or 'default'}"
    )
    with tempfile.TemporaryDirectory(prefix="edgekv-repair-") as tmp:
        path = write_cluster_file(
            tmp, regions=REGIONS, nodes=NODES, cluster="bench",
            extra={"replication": replication}, metrics=True, http=args.read_over == "http",
        )  # fmt: skip
        nodes = yaml.safe_load(path.read_text())["nodes"]
        metrics_at = {n["id"]: n["metrics_listen"] for n in nodes}
        http_at = {n["id"]: n.get("http_listen") for n in nodes}
        t0 = time.perf_counter()
        preload(path, args.keys, args.value_bytes)
        print(f"preloaded offline in {time.perf_counter() - t0:.1f} s")
        with LocalCluster(path, proxies=False, log_level="warning") as cluster:
            cluster.start(["iad-1"])
            iad = cluster.nodes["iad-1"]
            pin_all(iad.pid, 1)
            pin_all(os.getpid(), 0)
            endpoint = iad.endpoint
            if args.read_over == "http":
                endpoint = "http://" + http_at["iad-1"]
            reader = Reader(endpoint, 0, args.transport, args.rate)
            reader.start()
            reader.wait_for(500)  # warm up
            reader.take()
            cpu0, t0 = cpu_s(iad.pid), time.perf_counter()
            handled = handler_buckets(metrics_at["iad-1"], args.read_over)
            reader.wait_for(args.samples)
            idle_s, idle_cpu = time.perf_counter() - t0, cpu_s(iad.pid) - cpu0
            idle = report("read at iad-1, idle", reader.take(), idle_s, idle_cpu)
            report_handler(handled, handled := handler_buckets(metrics_at["iad-1"], args.read_over))

            cpu0, t0 = cpu_s(iad.pid), time.perf_counter()
            cluster.start(["fra-1"])
            fra = cluster.nodes["fra-1"].pid
            pin_all(fra, 0)
            nice_all(fra, args.peer_nice)
            peer_a = cluster.nodes["fra-1"].info["peer_endpoint"]
            peer_b = iad.info["peer_endpoint"]
            paused: list[tuple[float, float]] = []  # monotonic (from, to) of each pause
            last_pause = time.monotonic()
            while not asyncio.run(digests_equal(peer_a, peer_b)):
                time.sleep(0.5)
                nice_all(fra, args.peer_nice)  # and the threads it started since
                if args.pause_every and time.monotonic() - last_pause >= args.pause_every:
                    paused.append(pause(fra))
                    last_pause = time.monotonic()
            paused_s = sum(b - a for a, b in paused) + PAUSE_SETTLE_S * len(paused)
            repair_s = time.perf_counter() - t0 - paused_s
            repair_cpu = cpu_s(iad.pid) - cpu0
            timed = reader.take_timed()
            repairing, in_pause = split_by_pauses(timed, paused)
            during = report("read at iad-1, during repair", repairing, repair_s, repair_cpu)
            report_handler(handled, handled := handler_buckets(metrics_at["iad-1"], args.read_over))
            if paused:
                windows = report("  fra-1 paused (interleaved)", in_pause, paused_s, None)
            report_traffic(metrics_at, total_mb)
            reader.take()  # what it read while the bench counted: in no phase
            cpu0, t0 = cpu_s(iad.pid), time.perf_counter()
            handled = handler_buckets(metrics_at["iad-1"], args.read_over)
            reader.wait_for(args.samples)
            after_s, after_cpu = time.perf_counter() - t0, cpu_s(iad.pid) - cpu0
            after = report("read at iad-1, idle after", reader.take(), after_s, after_cpu)
            report_handler(handled, handler_buckets(metrics_at["iad-1"], args.read_over))
            reader.stop()
    ratio = during["p99"] / idle["p99"]
    print()
    print(f"read p99 repair / idle      {ratio:.2f}x   (goal <= 2x: "
          f"{'met' if ratio <= 2 else 'NOT met'})")  # fmt: skip
    print(f"read p99 repair / idle after {during['p99'] / after['p99']:.2f}x  "
          f"(the same node holding the repaired data, fra-1 up, nothing to repair)")  # fmt: skip
    if paused:
        interleaved = during["p99"] / windows["p99"]
        verdict = "met" if interleaved <= 2 else "NOT met"
        print(f"read p99 repair / paused    {interleaved:.2f}x   (interleaved: {len(paused)} "
              f"pauses of fra-1; goal <= 2x: {verdict})")  # fmt: skip
    print(f"repair time                 {repair_s:.1f} s for {args.keys} keys "
          f"({args.keys / repair_s:.0f} keys/s, {total_mb / repair_s:.1f} MB/s; "
          f"includes fra-1's start{', not its pauses' if paused else ''})")  # fmt: skip


if __name__ == "__main__":
    main()
