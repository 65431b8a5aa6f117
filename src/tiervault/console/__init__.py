"""The web console: a fleet of installations enrolled, reporting and commanded (docs/console.md).

Its own application beside the device code: it imports nothing of the engine or the vault;
what it shares with a device is tiervault.protocol.
"""
