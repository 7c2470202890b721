"""Shared fixtures. The real local stack is started on demand; see tests/fixtures/data_stack.py."""

pytest_plugins = ["tests.fixtures.data_stack"]
