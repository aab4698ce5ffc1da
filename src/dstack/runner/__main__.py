"""`python -m dstack.runner start ...`: the same as the `dstack-runner` command.

How the local server starts its runner. The collector is paused for the start (its imports
make a few hundred thousand objects that live for good), until `start` freezes them."""

if __name__ == "__main__":
    import gc

    gc.disable()

    from dstack.runner.cli import main

    main()
