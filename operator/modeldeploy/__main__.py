"""`python -m modeldeploy` is the `modeldeploy` command."""

import sys

from modeldeploy.cli import main

sys.exit(main())
