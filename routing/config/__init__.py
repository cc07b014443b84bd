"""The configuration as the data plane reads it: typed specs, built from the database, published
through the cache, and held by every process (docs/design.md, "Configuration")."""
