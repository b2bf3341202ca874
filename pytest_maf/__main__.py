import sys

from pytest_maf.cli import main

sys.exit(main())
