"""Sinks: where change events are written. Each sink is one module behind the `Sink` protocol."""
