"""Checkpoint stores: where a pipeline keeps `(commit position, index)` between runs."""
