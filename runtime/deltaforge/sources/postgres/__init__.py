"""PostgreSQL source: logical replication with the built-in pgoutput plugin, decoded in-process."""
