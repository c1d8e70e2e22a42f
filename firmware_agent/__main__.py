"""`python -m firmware_agent` runs the command line."""

import sys

from firmware_agent.cli import main

sys.exit(main())
