"""Routers per resource; ``API_ROUTERS`` go under /api/v1, ``health.router`` at the root."""

from api.routers import artifacts, candidates, catalog, cluster, events, health, searches, users

API_ROUTERS = [
    searches.router,
    events.router,
    candidates.router,
    artifacts.router,
    catalog.router,
    cluster.router,
    users.router,
]

__all__ = ["API_ROUTERS", "health"]
