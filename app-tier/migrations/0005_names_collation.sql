-- Names and e-mails compare under utf8mb4_uca1400_ai_ci instead of the tables'
-- utf8mb4_unicode_ci, for the four columns a unique key compares: states.name,
-- cities.name (with state_id), amenities.name and users.email.
--
-- Why: utf8mb4_unicode_ci is UCA 4.0.0, which gives every character outside the Basic
-- Multilingual Plane the same weight, so '😀emoji' and '😁emoji' (or '🏊' and '🅿️')
-- were one name and the second create a 409. uca1400_ai_ci (UCA 14.0.0, MariaDB 10.10
-- and later) weighs them apart, and is accent- and case-insensitive as before:
-- 'Texas' = 'texas', 'Café' = 'cafe', 'ß' = 'ss'. Over utf8mb4_unicode_520_ci (UCA
-- 5.2.0, which also tells them apart, by code point for anything newer than 5.2): real
-- weights for the characters of Unicode 6 to 14, emoji among them.
--
-- Ids and foreign keys keep their collation (they hold ASCII UUIDs, where the two
-- agree, and a foreign key's columns must match). The other text columns have no
-- unique key, so nothing compares them. MariaDB rebuilds each table, blocking its
-- writes while it does; triggers and indexes are kept. Should two existing rows be
-- equal under the new collation and not the old (no such pair is known), the ALTER
-- fails naming the duplicate key; rename one, delete version 5's row from
-- _sqlx_migrations and run `app-tier migrate` again (each ALTER may run twice).

ALTER TABLE states MODIFY name VARCHAR(128) NOT NULL COLLATE utf8mb4_uca1400_ai_ci;
ALTER TABLE cities MODIFY name VARCHAR(128) NOT NULL COLLATE utf8mb4_uca1400_ai_ci;
ALTER TABLE amenities MODIFY name VARCHAR(128) NOT NULL COLLATE utf8mb4_uca1400_ai_ci;
ALTER TABLE users MODIFY email VARCHAR(128) NOT NULL COLLATE utf8mb4_uca1400_ai_ci;
