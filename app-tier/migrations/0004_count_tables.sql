-- Per-table count shards: `<table>_count`, one small table each, replacing 0003's
-- `row_counts` (every table's shards in one table, keyed by table name).
--
-- Why: each list statement reads its table's total, and what that read costs is
-- mostly the second table itself. Measured on MariaDB 10.11 (server CPU per 20-row
-- page statement): with no total 78-89 us; summing a whole 16-row table 102-114 us;
-- summing the 16 rows of one table out of `row_counts` (a range on the primary key,
-- which the optimizer prices with index dives) 125-136 us.
--
-- Everything else is as in 0003: 16 shards per table, a write adds to the shard of its
-- connection (CONNECTION_ID() & 15), a table's count is the sum of its shards (one
-- shard alone may go negative), and each parent's BEFORE DELETE trigger subtracts the
-- descendants ON DELETE CASCADE is about to remove (MariaDB fires no trigger for
-- those), read with the locking reads of an UPDATE's subquery.
--
-- Apply with writers stopped, as 0003: a row written between the copy below and the
-- replaced triggers would be missed. The triggers keep their names and are replaced
-- in place (CREATE OR REPLACE), so no write ever finds a trigger pointing at a table
-- that is gone.

CREATE TABLE amenities_count (
    shard  TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    n      BIGINT           NOT NULL DEFAULT 0
) ENGINE=InnoDB;
INSERT INTO amenities_count (shard, n) SELECT shard, n FROM row_counts WHERE tbl = 'amenities';

CREATE TABLE cities_count (
    shard  TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    n      BIGINT           NOT NULL DEFAULT 0
) ENGINE=InnoDB;
INSERT INTO cities_count (shard, n) SELECT shard, n FROM row_counts WHERE tbl = 'cities';

CREATE TABLE places_count (
    shard  TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    n      BIGINT           NOT NULL DEFAULT 0
) ENGINE=InnoDB;
INSERT INTO places_count (shard, n) SELECT shard, n FROM row_counts WHERE tbl = 'places';

CREATE TABLE reviews_count (
    shard  TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    n      BIGINT           NOT NULL DEFAULT 0
) ENGINE=InnoDB;
INSERT INTO reviews_count (shard, n) SELECT shard, n FROM row_counts WHERE tbl = 'reviews';

CREATE TABLE states_count (
    shard  TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    n      BIGINT           NOT NULL DEFAULT 0
) ENGINE=InnoDB;
INSERT INTO states_count (shard, n) SELECT shard, n FROM row_counts WHERE tbl = 'states';

CREATE TABLE users_count (
    shard  TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    n      BIGINT           NOT NULL DEFAULT 0
) ENGINE=InnoDB;
INSERT INTO users_count (shard, n) SELECT shard, n FROM row_counts WHERE tbl = 'users';


CREATE OR REPLACE TRIGGER amenities_counted AFTER INSERT ON amenities FOR EACH ROW
    UPDATE amenities_count SET n = n + 1 WHERE shard = CONNECTION_ID() & 15;
CREATE OR REPLACE TRIGGER cities_counted AFTER INSERT ON cities FOR EACH ROW
    UPDATE cities_count SET n = n + 1 WHERE shard = CONNECTION_ID() & 15;
CREATE OR REPLACE TRIGGER places_counted AFTER INSERT ON places FOR EACH ROW
    UPDATE places_count SET n = n + 1 WHERE shard = CONNECTION_ID() & 15;
CREATE OR REPLACE TRIGGER reviews_counted AFTER INSERT ON reviews FOR EACH ROW
    UPDATE reviews_count SET n = n + 1 WHERE shard = CONNECTION_ID() & 15;
CREATE OR REPLACE TRIGGER states_counted AFTER INSERT ON states FOR EACH ROW
    UPDATE states_count SET n = n + 1 WHERE shard = CONNECTION_ID() & 15;
CREATE OR REPLACE TRIGGER users_counted AFTER INSERT ON users FOR EACH ROW
    UPDATE users_count SET n = n + 1 WHERE shard = CONNECTION_ID() & 15;

-- Leaves: nothing cascades from them (place_amenity links are not counted).
CREATE OR REPLACE TRIGGER amenities_uncounted BEFORE DELETE ON amenities FOR EACH ROW
    UPDATE amenities_count SET n = n - 1 WHERE shard = CONNECTION_ID() & 15;
CREATE OR REPLACE TRIGGER reviews_uncounted BEFORE DELETE ON reviews FOR EACH ROW
    UPDATE reviews_count SET n = n - 1 WHERE shard = CONNECTION_ID() & 15;

-- A place takes its reviews.
CREATE OR REPLACE TRIGGER places_uncounted BEFORE DELETE ON places FOR EACH ROW
BEGIN
    UPDATE places_count SET n = n - 1 WHERE shard = CONNECTION_ID() & 15;
    UPDATE reviews_count SET n = n - (SELECT COUNT(*) FROM reviews WHERE place_id = OLD.id)
    WHERE shard = CONNECTION_ID() & 15;
END;

-- A city takes its places and their reviews.
CREATE OR REPLACE TRIGGER cities_uncounted BEFORE DELETE ON cities FOR EACH ROW
BEGIN
    UPDATE cities_count SET n = n - 1 WHERE shard = CONNECTION_ID() & 15;
    UPDATE places_count SET n = n - (SELECT COUNT(*) FROM places WHERE city_id = OLD.id)
    WHERE shard = CONNECTION_ID() & 15;
    UPDATE reviews_count SET n = n - (
        SELECT COUNT(*) FROM reviews r JOIN places p ON p.id = r.place_id
        WHERE p.city_id = OLD.id)
    WHERE shard = CONNECTION_ID() & 15;
END;

-- A state takes its cities, their places and the places' reviews.
CREATE OR REPLACE TRIGGER states_uncounted BEFORE DELETE ON states FOR EACH ROW
BEGIN
    UPDATE states_count SET n = n - 1 WHERE shard = CONNECTION_ID() & 15;
    UPDATE cities_count SET n = n - (SELECT COUNT(*) FROM cities WHERE state_id = OLD.id)
    WHERE shard = CONNECTION_ID() & 15;
    UPDATE places_count SET n = n - (
        SELECT COUNT(*) FROM places p JOIN cities c ON c.id = p.city_id
        WHERE c.state_id = OLD.id)
    WHERE shard = CONNECTION_ID() & 15;
    UPDATE reviews_count SET n = n - (
        SELECT COUNT(*) FROM reviews r JOIN places p ON p.id = r.place_id
        JOIN cities c ON c.id = p.city_id
        WHERE c.state_id = OLD.id)
    WHERE shard = CONNECTION_ID() & 15;
END;

-- A user takes the places they own, the reviews they wrote anywhere, and the others'
-- reviews of their places (two index walks, each review counted once).
CREATE OR REPLACE TRIGGER users_uncounted BEFORE DELETE ON users FOR EACH ROW
BEGIN
    UPDATE users_count SET n = n - 1 WHERE shard = CONNECTION_ID() & 15;
    UPDATE places_count SET n = n - (SELECT COUNT(*) FROM places WHERE user_id = OLD.id)
    WHERE shard = CONNECTION_ID() & 15;
    UPDATE reviews_count SET n = n
        - (SELECT COUNT(*) FROM reviews WHERE user_id = OLD.id)
        - (SELECT COUNT(*) FROM reviews r JOIN places p ON p.id = r.place_id
           WHERE p.user_id = OLD.id AND r.user_id <> OLD.id)
    WHERE shard = CONNECTION_ID() & 15;
END;

DROP TABLE row_counts;
