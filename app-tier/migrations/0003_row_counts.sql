-- Exact row counts per table, kept by triggers in the writing transaction, so that the
-- total of an unfiltered list and `/api/v1/stats` read 16 rows instead of counting the
-- whole table (InnoDB keeps no count: COUNT(*) walks an index, O(rows) per request).
--
-- Each table's count is split over 16 shards; a write adds to the shard of its
-- connection (CONNECTION_ID() & 15), so concurrent creates from a pool's connections
-- lock different rows. The count is the sum of the shards; one shard alone means
-- nothing and may go negative.
--
-- MariaDB fires no trigger for rows that ON DELETE CASCADE removes. So each parent's
-- BEFORE DELETE trigger subtracts the descendants the cascade is about to remove, read
-- while they still exist. The reads of an UPDATE's subquery are locking reads in
-- InnoDB, so a child inserted concurrently either is counted here or waits for this
-- delete (and then fails its foreign key check).
--
-- Apply with writers stopped: a row written between the initial count below and the
-- triggers' creation would be missed. Row-based replication copies row_counts' own
-- changes; a replica does not run these triggers for replicated rows (MariaDB's
-- default slave_run_triggers_for_rbr = NO), so nothing is counted twice.

CREATE TABLE row_counts (
    tbl    VARCHAR(32)      NOT NULL,
    shard  TINYINT UNSIGNED NOT NULL,
    n      BIGINT           NOT NULL DEFAULT 0,
    PRIMARY KEY (tbl, shard)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

INSERT INTO row_counts (tbl, shard)
SELECT t.tbl, s.k
FROM (SELECT 'amenities' AS tbl UNION ALL SELECT 'cities' UNION ALL SELECT 'places'
      UNION ALL SELECT 'reviews' UNION ALL SELECT 'states' UNION ALL SELECT 'users') t
CROSS JOIN (WITH RECURSIVE s (k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM s WHERE k < 15)
            SELECT k FROM s) s;

UPDATE row_counts SET n = (SELECT COUNT(*) FROM amenities) WHERE tbl = 'amenities' AND shard = 0;
UPDATE row_counts SET n = (SELECT COUNT(*) FROM cities) WHERE tbl = 'cities' AND shard = 0;
UPDATE row_counts SET n = (SELECT COUNT(*) FROM places) WHERE tbl = 'places' AND shard = 0;
UPDATE row_counts SET n = (SELECT COUNT(*) FROM reviews) WHERE tbl = 'reviews' AND shard = 0;
UPDATE row_counts SET n = (SELECT COUNT(*) FROM states) WHERE tbl = 'states' AND shard = 0;
UPDATE row_counts SET n = (SELECT COUNT(*) FROM users) WHERE tbl = 'users' AND shard = 0;

CREATE TRIGGER amenities_counted AFTER INSERT ON amenities FOR EACH ROW
    UPDATE row_counts SET n = n + 1 WHERE tbl = 'amenities' AND shard = CONNECTION_ID() & 15;
CREATE TRIGGER cities_counted AFTER INSERT ON cities FOR EACH ROW
    UPDATE row_counts SET n = n + 1 WHERE tbl = 'cities' AND shard = CONNECTION_ID() & 15;
CREATE TRIGGER places_counted AFTER INSERT ON places FOR EACH ROW
    UPDATE row_counts SET n = n + 1 WHERE tbl = 'places' AND shard = CONNECTION_ID() & 15;
CREATE TRIGGER reviews_counted AFTER INSERT ON reviews FOR EACH ROW
    UPDATE row_counts SET n = n + 1 WHERE tbl = 'reviews' AND shard = CONNECTION_ID() & 15;
CREATE TRIGGER states_counted AFTER INSERT ON states FOR EACH ROW
    UPDATE row_counts SET n = n + 1 WHERE tbl = 'states' AND shard = CONNECTION_ID() & 15;
CREATE TRIGGER users_counted AFTER INSERT ON users FOR EACH ROW
    UPDATE row_counts SET n = n + 1 WHERE tbl = 'users' AND shard = CONNECTION_ID() & 15;

-- Leaves: nothing cascades from them (place_amenity links are not counted).
CREATE TRIGGER amenities_uncounted BEFORE DELETE ON amenities FOR EACH ROW
    UPDATE row_counts SET n = n - 1 WHERE tbl = 'amenities' AND shard = CONNECTION_ID() & 15;
CREATE TRIGGER reviews_uncounted BEFORE DELETE ON reviews FOR EACH ROW
    UPDATE row_counts SET n = n - 1 WHERE tbl = 'reviews' AND shard = CONNECTION_ID() & 15;

-- A place takes its reviews.
CREATE TRIGGER places_uncounted BEFORE DELETE ON places FOR EACH ROW
BEGIN
    UPDATE row_counts SET n = n - 1 WHERE tbl = 'places' AND shard = CONNECTION_ID() & 15;
    UPDATE row_counts SET n = n - (SELECT COUNT(*) FROM reviews WHERE place_id = OLD.id)
    WHERE tbl = 'reviews' AND shard = CONNECTION_ID() & 15;
END;

-- A city takes its places and their reviews.
CREATE TRIGGER cities_uncounted BEFORE DELETE ON cities FOR EACH ROW
BEGIN
    UPDATE row_counts SET n = n - 1 WHERE tbl = 'cities' AND shard = CONNECTION_ID() & 15;
    UPDATE row_counts SET n = n - (SELECT COUNT(*) FROM places WHERE city_id = OLD.id)
    WHERE tbl = 'places' AND shard = CONNECTION_ID() & 15;
    UPDATE row_counts SET n = n - (
        SELECT COUNT(*) FROM reviews r JOIN places p ON p.id = r.place_id
        WHERE p.city_id = OLD.id)
    WHERE tbl = 'reviews' AND shard = CONNECTION_ID() & 15;
END;

-- A state takes its cities, their places and the places' reviews.
CREATE TRIGGER states_uncounted BEFORE DELETE ON states FOR EACH ROW
BEGIN
    UPDATE row_counts SET n = n - 1 WHERE tbl = 'states' AND shard = CONNECTION_ID() & 15;
    UPDATE row_counts SET n = n - (SELECT COUNT(*) FROM cities WHERE state_id = OLD.id)
    WHERE tbl = 'cities' AND shard = CONNECTION_ID() & 15;
    UPDATE row_counts SET n = n - (
        SELECT COUNT(*) FROM places p JOIN cities c ON c.id = p.city_id
        WHERE c.state_id = OLD.id)
    WHERE tbl = 'places' AND shard = CONNECTION_ID() & 15;
    UPDATE row_counts SET n = n - (
        SELECT COUNT(*) FROM reviews r JOIN places p ON p.id = r.place_id
        JOIN cities c ON c.id = p.city_id
        WHERE c.state_id = OLD.id)
    WHERE tbl = 'reviews' AND shard = CONNECTION_ID() & 15;
END;

-- A user takes the places they own, the reviews they wrote anywhere, and the others'
-- reviews of their places (two index walks, each review counted once).
CREATE TRIGGER users_uncounted BEFORE DELETE ON users FOR EACH ROW
BEGIN
    UPDATE row_counts SET n = n - 1 WHERE tbl = 'users' AND shard = CONNECTION_ID() & 15;
    UPDATE row_counts SET n = n - (SELECT COUNT(*) FROM places WHERE user_id = OLD.id)
    WHERE tbl = 'places' AND shard = CONNECTION_ID() & 15;
    UPDATE row_counts SET n = n
        - (SELECT COUNT(*) FROM reviews WHERE user_id = OLD.id)
        - (SELECT COUNT(*) FROM reviews r JOIN places p ON p.id = r.place_id
           WHERE p.user_id = OLD.id AND r.user_id <> OLD.id)
    WHERE tbl = 'reviews' AND shard = CONNECTION_ID() & 15;
END;
