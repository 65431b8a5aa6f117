"""The daemon: backup sets on schedules, idle synchronization, a local control API.

It sits between the CLI and the service layer: everything it does to the vault
goes through ``tiervault.service`` like the CLI's commands do.
"""
