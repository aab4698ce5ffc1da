"""`python -m dstack.runner start ...`: the same as the `dstack-runner` command."""

from dstack.runner.cli import main

if __name__ == "__main__":
    main()
