"""The console's store: SQLAlchemy models, the engine, Alembic migrations."""
