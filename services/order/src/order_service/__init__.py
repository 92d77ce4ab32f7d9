"""The order participant of Sagaline: creates, confirms and cancels orders for sagas, idempotently."""
