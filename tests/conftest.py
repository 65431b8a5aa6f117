"""Fixture plugins shared by the test packages (pytest only reads pytest_plugins here)."""

import signal

pytest_plugins = ["tests.console.databases"]

# A test run started in the background of a script (``bash .ci/run &``, nohup) inherits
# SIGINT ignored, and so would every tiervault process the tests start: Python then
# installs no KeyboardInterrupt handler and a test's Ctrl-C (SIGINT) is silently lost.
# The tests play a user at a terminal, where Ctrl-C is delivered: undo the inherited
# ignore here so the processes started below get the default disposition.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
