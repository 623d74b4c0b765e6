"""The BentoML service (`bentoml serve service:SkinService`).

It lands with the serve issue, on top of the exported model of the export issue; this release ships the
data layer only, so there is no service class here yet and `bentoml serve` has nothing to start.
"""
