"""The service layer: operations shared by the CLI, the daemon and the console."""
