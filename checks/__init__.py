"""pytest-maf's built-in preflight checks, collected by `pytest --maf-preflight`.

Installed as ``pytest_maf.checks``. Each check is a plain pytest test with a
``maf_check`` marker giving its stable id, severity and tags.
"""
