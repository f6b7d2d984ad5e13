"""The service's shared layer: settings, the store (SQLAlchemy models, repository, Alembic migrations) and the
database admin commands. The API (``api``) and the Ray workers (``workers``) build on it; the engine (``nas``) and
the SDK (``nas.client``) never import it.
"""
