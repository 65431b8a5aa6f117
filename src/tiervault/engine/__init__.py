"""The snapshot engine: backup, restore, listing, retention, prune and check."""
