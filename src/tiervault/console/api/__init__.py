"""The console's HTTP APIs: the agent protocol and the management JSON API."""
