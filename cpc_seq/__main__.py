"""``python -m cpc_seq`` is the ``cpc-seq`` command."""

import sys

from cpc_seq.cli import main

sys.exit(main())
