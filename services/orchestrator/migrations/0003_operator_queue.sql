-- The queue of what needs a person, and retention.
-- A FAILED saga a person marked handled without acting keeps its status (SPEC's states are unchanged)
-- and records who resolved it, when and why; it leaves the queue and becomes eligible for retention.
ALTER TABLE sagas ADD COLUMN resolution jsonb;

-- Retention deletes finished sagas oldest first, in small batches: this index finds them without a
-- scan of the whole table, and holds no live saga (those have no finished_at).
CREATE INDEX sagas_finished_idx ON sagas (finished_at)
    WHERE status IN ('COMPLETED', 'COMPENSATED') OR (status = 'FAILED' AND resolution IS NOT NULL);
