"""pytest-maf: preflight checks, task leases, file reservations and evidence
for repositories worked on by several coding agents.

PYTEST_DONT_REWRITE: ``maf-preflight`` imports this package before it starts
pytest, which would otherwise warn that the package cannot be rewritten (an
error where the project sets ``filterwarnings = error``)."""

__version__ = "0.1.0"
