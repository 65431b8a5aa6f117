"""The device <-> console protocol: the one module both sides share.

Stdlib only (dataclasses and json), so a device's install stays lean; the console
validates the same dataclasses through its web framework. See docs/console.md.
"""
