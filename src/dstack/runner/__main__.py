"""`python -m dstack.runner start ...`: the same as the `dstack-runner` command.

How the local server starts its runner. The collector is paused for the start (its imports
make a few hundred thousand objects that live for good), until `start` freezes them."""

import gc

gc.disable()

from dstack.runner.cli import main  # noqa: E402  (after the collector is paused)

if __name__ == "__main__":
    main()
