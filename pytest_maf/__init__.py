"""pytest-maf: preflight checks, task leases, file reservations and evidence
for repositories worked on by several coding agents."""

__version__ = "0.1.0"
