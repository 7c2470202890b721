"""Shared fixtures. The real local stack is started on demand; see tests/fixtures/."""

pytest_plugins = ["tests.fixtures.data_stack", "tests.fixtures.control_plane", "tests.fixtures.fault_reports"]
