"""Built-in processors: `filter` (by op and table), `select` (keep or drop columns), `mask` (hash or redact)."""
