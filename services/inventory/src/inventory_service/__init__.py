"""The Sagaline inventory participant: reserves stock for sagas and releases it when they compensate."""
