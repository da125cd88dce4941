-- Lists are ordered by (created_at, id) for stable pagination; these indexes let
-- LIMIT/OFFSET walk the index instead of sorting the table, and serve the reverse
-- look-up of place_amenity (places having an amenity) for places_search.

CREATE INDEX ix_states_created ON states (created_at, id);
CREATE INDEX ix_cities_created ON cities (created_at, id);
CREATE INDEX ix_users_created ON users (created_at, id);
CREATE INDEX ix_places_created ON places (created_at, id);
CREATE INDEX ix_reviews_created ON reviews (created_at, id);
CREATE INDEX ix_amenities_created ON amenities (created_at, id);
CREATE INDEX ix_place_amenity_amenity ON place_amenity (amenity_id, place_id);
