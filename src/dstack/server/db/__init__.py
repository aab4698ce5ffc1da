"""The server's database: ORM rows, engine set-up and migrations."""
