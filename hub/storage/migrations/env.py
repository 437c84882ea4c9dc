"""Alembic environment: the engine comes from hub.storage.engine (no alembic.ini, no URL)."""

from alembic import context

from hub.storage.schema import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
