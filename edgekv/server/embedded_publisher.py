"""The node's side of embedded reads: it publishes its manifest and a change signal.

Built by server/node.py right after the engine opens, closed just before it.
What the files are and why: storage/replica_files.py. Cost on the write path:
one ``latest_sequence_number`` and one 32-byte ``pwrite`` per commit that
changed data (bench/e2e/embedded.py measures it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edgekv.cluster.placement import PlacementRules
from edgekv.config.model import ClusterConfig, NodeSpec
from edgekv.storage.engine import Engine
from edgekv.storage.record import Change
from edgekv.storage.replica_files import Manifest, SignalWriter, write_manifest


class EmbeddedPublisher:
    """Writes the manifest once, then the change signal after every data commit.

    Safe from any thread: the engine calls ``_on_change`` under its write lock,
    from the loop or from the group-commit worker.
    """

    def __init__(
        self, engine: Engine, config: ClusterConfig, spec: NodeSpec, placement: PlacementRules
    ) -> None:
        epoch = time.time_ns()  # one per start: readers reload the manifest when it changes
        manifest = Manifest(
            node_id=spec.id,
            region=spec.region,
            cluster=config.cluster,
            regions=tuple(r.name for r in config.regions),
            placement=tuple((rule.prefix, tuple(rule.regions)) for rule in placement.rules),
            epoch=epoch,
            max_batch_ops=config.limits.max_batch_ops,
            max_scan_limit=config.limits.max_scan_limit,
        )
        write_manifest(engine.path, manifest)  # before the signal names its epoch
        self._writer = SignalWriter(engine.path, epoch)
        # Looked up on every commit: an in-place reopen (storage/recovery.py) replaces it.
        self._seq_of: Callable[[], int] = lambda: engine.column_families()[
            0
        ].latest_sequence_number()
        self._writer.publish(self._seq_of())
        engine.add_listener(self._on_change)

    def _on_change(self, changes: list[Change], last_seq: int, local: bool) -> None:
        self._writer.publish(self._seq_of())

    def close(self) -> None:
        """Stop publishing (the files stay: readers keep the last state)."""
        self._writer.close()
