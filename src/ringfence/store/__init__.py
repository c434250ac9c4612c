"""Persistence: SQLAlchemy 2 models, data-access functions and Alembic migrations, on SQLite
(embedded default) and PostgreSQL (scale path)."""
