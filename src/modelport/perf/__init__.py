"""``modelport perf`` and ``modelport tune``: load a model's doors and measure them.

:func:`~modelport.perf.session.measure` runs a sweep of load levels (requests in flight, or
requests a second) against a running server (:class:`~modelport.perf.session.RemoteTarget`:
HTTP JSON, HTTP binary, gRPC) or a model loaded in this process
(:class:`~modelport.perf.session.LocalTarget`), and reads the server's own counters of each
interval (requests, batch sizes). :mod:`modelport.perf.tune` sweeps a model's settings with it.
"""
