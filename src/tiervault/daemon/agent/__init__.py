"""The console agent: the daemon's client of the console's protocol (stdlib only).

``settings`` reads ``[console]``; ``client`` talks HTTPS with the pinned fingerprint;
``reports`` replays the state database's sessions; ``journal`` and ``commands`` run
console commands at most once; ``checkin`` builds the periodic check-in; ``agent``
runs the threads; ``profile`` applies an enrolment token's profile.
"""
