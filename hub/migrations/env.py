"""Alembic environment: the engine comes from hub.db (no alembic.ini, no URL in a file)."""

from alembic import context

from hub.schema import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
