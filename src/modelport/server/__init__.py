"""Front doors over the network: the HTTP app, the gRPC servicer, metrics, the serve loop.

``create_app(dataplane, settings)`` gives the ASGI app; ``serve(settings)`` runs everything.
"""
