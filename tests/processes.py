"""Loopback ports and child processes for the tests' servers: scripts/simulator_process.py's."""

from simulator_process import free_port  # noqa: F401
from simulator_process import stop as stop_process  # noqa: F401
