"""The local real stack: PostgreSQL, MariaDB, Redis and Kafka on loopback, for tests and the demo.

`python -m hack.stack up|down|status|env|clean` drives it; tests call `up()` through their fixtures.
"""

from hack.stack.errors import StackError
from hack.stack.orchestrate import SERVICE_NAMES, down, environment, status, up

__all__ = ["SERVICE_NAMES", "StackError", "down", "environment", "status", "up"]
