"""``python -m vidu_async``: the same command line as the ``vidu-async`` script."""

import sys

from vidu_async.cli import main

sys.exit(main())
