"""Locust scenarios and their runner (the load-test issue). Never imported by the service, trainer or tests
that import torch: Locust monkey-patches the standard library through gevent on import."""
