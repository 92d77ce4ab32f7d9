"""Fault injection for the running system: network faults between processes, switched while tests run.

Fail-points inside a process live in `servicekit.failpoints`; this package acts on the wire between them.
"""
