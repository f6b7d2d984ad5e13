"""Storage of the service: SQLAlchemy models, repository functions and Alembic migrations."""

from service.store.db import Database
from service.store.migrate import upgrade

__all__ = ["Database", "upgrade"]
