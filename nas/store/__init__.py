"""Storage of the service: SQLAlchemy models, repository functions and Alembic migrations."""

from nas.store.db import Database
from nas.store.migrate import upgrade

__all__ = ["Database", "upgrade"]
