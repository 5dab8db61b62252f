"""``python -m vidu_async``: the same command line as the ``vidu-async`` script."""

from vidu_async.cli import run

run()
