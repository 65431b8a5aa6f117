"""The installation's own state: its home directory, config file and database."""
