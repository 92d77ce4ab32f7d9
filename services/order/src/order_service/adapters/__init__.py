"""Adapters: PostgreSQL storage and the gRPC API of the order service."""
