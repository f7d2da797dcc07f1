"""The request layer: one place for auth, routing, fan-out and write paths.

Every front door (the gRPC servicers in server/, the HTTP face) turns its wire
format into plain values and a :class:`Call`, calls the :class:`Coordinator`,
and turns the plain result or ``EdgeKVError`` back into its wire format.
"""

from edgekv.coordinator.call import Call
from edgekv.coordinator.coordinator import Coordinator
from edgekv.coordinator.forwarding import DirectForwarder, Forwarder, GrpcForwarder
from edgekv.coordinator.results import BatchGetResult, ChangeEvent, GetResult, ScanResult, WriteAck

__all__ = [
    "BatchGetResult",
    "Call",
    "ChangeEvent",
    "Coordinator",
    "DirectForwarder",
    "Forwarder",
    "GetResult",
    "GrpcForwarder",
    "ScanResult",
    "WriteAck",
]
