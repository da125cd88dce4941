-- The HBNB schema: states > cities > places (owned by users) > reviews, and amenities
-- linked to places many-to-many. Ids are UUIDv4 strings, as in the original API.
-- Deleting a parent deletes its children (ON DELETE CASCADE), as HBNB's ORM did, in one
-- statement so a delete is atomic without an application-level transaction.
-- Timestamps are UTC (the driver sets time_zone = '+00:00' on every connection).

CREATE TABLE states (
    id          VARCHAR(36)  NOT NULL PRIMARY KEY,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    name        VARCHAR(128) NOT NULL,
    CONSTRAINT uq_states_name UNIQUE (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE cities (
    id          VARCHAR(36)  NOT NULL PRIMARY KEY,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    state_id    VARCHAR(36)  NOT NULL,
    name        VARCHAR(128) NOT NULL,
    CONSTRAINT uq_cities_state_name UNIQUE (state_id, name),
    CONSTRAINT fk_cities_state FOREIGN KEY (state_id) REFERENCES states (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE users (
    id          VARCHAR(36)  NOT NULL PRIMARY KEY,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    email       VARCHAR(128) NOT NULL,
    -- "sha256$<salt hex>$<digest hex>", never returned by the API.
    password    VARCHAR(255) NOT NULL,
    first_name  VARCHAR(128) NULL,
    last_name   VARCHAR(128) NULL,
    CONSTRAINT uq_users_email UNIQUE (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE places (
    id               VARCHAR(36)   NOT NULL PRIMARY KEY,
    created_at       DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at       DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    city_id          VARCHAR(36)   NOT NULL,
    user_id          VARCHAR(36)   NOT NULL,
    name             VARCHAR(128)  NOT NULL,
    description      VARCHAR(4096) NULL,
    number_rooms     INT           NOT NULL DEFAULT 0,
    number_bathrooms INT           NOT NULL DEFAULT 0,
    max_guest        INT           NOT NULL DEFAULT 0,
    price_by_night   INT           NOT NULL DEFAULT 0,
    latitude         DOUBLE        NULL,
    longitude        DOUBLE        NULL,
    CONSTRAINT fk_places_city FOREIGN KEY (city_id) REFERENCES cities (id) ON DELETE CASCADE,
    CONSTRAINT fk_places_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE reviews (
    id          VARCHAR(36)   NOT NULL PRIMARY KEY,
    created_at  DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    place_id    VARCHAR(36)   NOT NULL,
    user_id     VARCHAR(36)   NOT NULL,
    text        VARCHAR(4096) NOT NULL,
    CONSTRAINT fk_reviews_place FOREIGN KEY (place_id) REFERENCES places (id) ON DELETE CASCADE,
    CONSTRAINT fk_reviews_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE amenities (
    id          VARCHAR(36)  NOT NULL PRIMARY KEY,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    name        VARCHAR(128) NOT NULL,
    CONSTRAINT uq_amenities_name UNIQUE (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE place_amenity (
    place_id    VARCHAR(36) NOT NULL,
    amenity_id  VARCHAR(36) NOT NULL,
    PRIMARY KEY (place_id, amenity_id),
    CONSTRAINT fk_place_amenity_place FOREIGN KEY (place_id) REFERENCES places (id) ON DELETE CASCADE,
    CONSTRAINT fk_place_amenity_amenity FOREIGN KEY (amenity_id) REFERENCES amenities (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
