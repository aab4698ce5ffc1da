from dstack.cli.main import entry

entry()
