from dstack.cli.warm import entry

entry()
