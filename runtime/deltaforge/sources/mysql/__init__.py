"""MySQL/MariaDB source: the row-based binlog read with mysql-replication in a thread of its own."""
