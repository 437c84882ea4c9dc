"""The hub's storage, under every plane: the engine, the schema and its migrations, the node
registry, and the one timestamp format."""
