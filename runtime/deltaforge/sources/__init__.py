"""Change sources: each reads one kind of database log and yields committed row changes in order."""
