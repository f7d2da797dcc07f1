"""The HTTP door: the KV and Cluster services over Connect and gRPC-Web, and a REST face.

For clients that have only ``fetch()`` (edge runtimes, browsers) or curl. One
module per concept: ``door`` (what a node builds), ``listener`` (the socket,
and which server runs the app: ``uvicorn_server`` by default, ``hypercorn_server``
for ``http.h2c``), ``app`` (routing, body limits, timing, metrics, CORS), ``rpc`` (the
connectrpc services), ``rest`` and ``openapi`` (the REST face and its
document), ``calls`` (the caller's ``Call`` and the client limits).
"""
