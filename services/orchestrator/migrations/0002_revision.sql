-- Checkpoints saved per saga. A fenced save expects the current revision and bumps it, so a save retried
-- after an unknown outcome (the connection broke around its commit) can tell that its earlier attempt
-- committed from a lost lease, and never records the same move twice.
ALTER TABLE sagas ADD COLUMN revision bigint NOT NULL DEFAULT 0;
