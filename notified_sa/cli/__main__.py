"""``python -m notified_sa.cli``: the same as the ``notified-sa`` command."""

import sys

from . import main

sys.exit(main())
