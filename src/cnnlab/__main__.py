"""``python -m cnnlab`` is the ``cnnlab`` command."""

import sys

from cnnlab.cli.main import main

sys.exit(main())
