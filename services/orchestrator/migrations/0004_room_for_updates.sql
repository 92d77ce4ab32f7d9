-- A saga row is updated at every checkpoint (4-5 times for a happy saga) and each of its steps at least
-- twice. An update that changes no indexed column and finds room on the row's own page is a HOT update:
-- no new entry in any index, and the old version is pruned in place. Full pages (the default fillfactor
-- 100, which the inserts of new sagas produce) refuse that room, so every checkpoint wrote one new entry
-- into each of the saga's five indexes. Leaving part of each page free keeps the steps of a running saga
-- HOT; the space is reused as finished sagas' old versions are pruned. Affects pages written from now on.
ALTER TABLE sagas SET (fillfactor = 50);
ALTER TABLE saga_steps SET (fillfactor = 70);
