"""Loopback stand-ins for the outside world, used by ``relist demo`` and the tests.

Real protocol peers, not mocks: an SMTP sink with error injection (the upstream
MTA), and a DNS server that answers over UDP from a zone table.  Everything binds
127.0.0.1 and runs on an event loop in a background thread.
"""
