"""Process plumbing every Sagaline service needs: settings, logging, telemetry, database, gRPC, HTTP, lifecycle.

Nothing here names a saga, an order, a payment or stock; services build on it, never the reverse.
"""
