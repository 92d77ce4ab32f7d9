"""The orchestrator's domain: saga and step state machines, definitions, retry policy, circuit breaker.

Pure Python: no I/O, no clock reads, no randomness; time and chance are passed in.
"""
