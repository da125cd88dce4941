"""The `app` benchmark's peer: the HBNB places endpoints the app tier serves, written the
way the original stack did (Flask + PyMySQL under Gunicorn sync workers), on the same
MariaDB database and data.

Only what the benchmark requests is here, with the app tier's semantics, and its SQL
for the two reads (the list's total from the places_count shards of migrations 0003
and 0004, in the page's own statement), except timestamps: MariaDB formats them here
(DATE_FORMAT), which spares Python parsing and re-printing datetime objects; the app
tier formats the DATETIME values itself, which is cheaper for it. The create is
written the way such a Flask view is (a transaction: look the city and the user up,
insert, read the row back); the app tier sends a single INSERT ... RETURNING and
explains a foreign-key refusal afterwards (same answers).
- GET  /api/v1/places?page=N&per_page=M  (oldest first; X-Total-Count, X-Page, X-Per-Page)
- GET  /api/v1/places/<id>
- POST /api/v1/cities/<city_id>/places   (400 bad body, 404 city, 422 user_id; 201)

Run: gunicorn -w 2 -b 127.0.0.1:8000 --chdir bench/peers/gunicorn app:app, with
HBNB_MYSQL_HOST, HBNB_MYSQL_PORT (or HBNB_MYSQL_SOCKET), HBNB_MYSQL_USER, HBNB_MYSQL_PWD,
HBNB_MYSQL_DB set.
Each worker keeps one connection (opened after the fork, reopened if it drops), as a
Flask-SQLAlchemy pool of one per sync worker would.
"""

import os
import uuid

import pymysql
from flask import Flask, jsonify, request

app = Flask(__name__)

# Every statement using it has parameters, so PyMySQL %-formats it: '%%' is a '%'.
COLUMNS = (
    "t.id, DATE_FORMAT(t.created_at, '%%Y-%%m-%%dT%%H:%%i:%%s.%%f') AS created_at, "
    "DATE_FORMAT(t.updated_at, '%%Y-%%m-%%dT%%H:%%i:%%s.%%f') AS updated_at, t.city_id, "
    "t.user_id, t.name, t.description, t.number_rooms, t.number_bathrooms, "
    "t.max_guest, t.price_by_night, t.latitude, t.longitude"
)
INTS = ("number_rooms", "number_bathrooms", "max_guest", "price_by_night")
_conn = None


def db():
    global _conn
    if _conn is None or not _conn.open:
        _conn = pymysql.connect(
            host=os.environ.get("HBNB_MYSQL_HOST", "127.0.0.1"),
            port=int(os.environ.get("HBNB_MYSQL_PORT", "3306")),
            # Set: the server's Unix socket instead of TCP (host and port unused).
            unix_socket=os.environ.get("HBNB_MYSQL_SOCKET"),
            user=os.environ.get("HBNB_MYSQL_USER", "hbnb"),
            password=os.environ.get("HBNB_MYSQL_PWD", ""),
            database=os.environ.get("HBNB_MYSQL_DB", "hbnb"),
            charset="utf8mb4",
            cursorclass=pymysql.cursors.DictCursor,
            autocommit=True,
            init_command="SET time_zone = '+00:00'",
        )
    return _conn


def place(row):
    row = dict(row)
    row["__class__"] = "Place"
    return row


def error(status, message, field=None):
    body = {"error": message}
    if field:
        body["field"] = field
    return jsonify(body), status


def paging():
    try:
        page = int(request.args.get("page", "1"))
        per_page = int(request.args.get("per_page", "50"))
    except ValueError:
        return None
    if page < 1 or not 1 <= per_page <= 500:
        return None
    return page, per_page


@app.get("/api/v1/places")
def list_places():
    p = paging()
    if p is None:
        return error(400, "bad paging")
    page, per_page = p
    with db().cursor() as c:
        c.execute(
            # The app tier's page query (store::page_sql): it names the (created_at, id)
            # index, which MariaDB 10.11 would otherwise not walk for this LIMIT, and
            # each row carries the total, the sum of the trigger-kept places_count
            # shards (migrations 0003 and 0004).
            f"SELECT {COLUMNS}, (SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) "
            "FROM places_count) AS total "
            "FROM places t FORCE INDEX (ix_places_created) "
            "ORDER BY t.created_at, t.id LIMIT %s OFFSET %s",
            (per_page, (page - 1) * per_page),
        )
        rows = c.fetchall()
        if rows:
            total = rows[0]["total"]
        elif page == 1:
            total = 0
        else:
            c.execute(
                "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) AS n FROM places_count"
            )
            total = c.fetchone()["n"]
        rows = [place({k: v for k, v in r.items() if k != "total"}) for r in rows]
    resp = jsonify(rows)
    resp.headers["X-Total-Count"] = str(total)
    resp.headers["X-Page"] = str(page)
    resp.headers["X-Per-Page"] = str(per_page)
    return resp


@app.get("/api/v1/places/<place_id>")
def get_place(place_id):
    with db().cursor() as c:
        c.execute(f"SELECT {COLUMNS} FROM places t WHERE t.id = %s", (place_id,))
        row = c.fetchone()
    if row is None:
        return error(404, "not found")
    return jsonify(place(row))


@app.post("/api/v1/cities/<city_id>/places")
def create_place(city_id):
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        return error(400, "name: required string of 1 to 128 characters", "name")
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or len(user_id) > 36:
        return error(400, "user_id: required id", "user_id")
    values = {"user_id": user_id, "name": name}
    for k in INTS:
        if k in body:
            v = body[k]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                return error(400, f"{k}: a non-negative integer", k)
            values[k] = v
    for k in ("description", "latitude", "longitude"):
        if body.get(k) is not None:
            values[k] = body[k]
    conn = db()
    conn.begin()
    try:
        with conn.cursor() as c:
            c.execute("SELECT 1 FROM cities WHERE id = %s", (city_id,))
            if c.fetchone() is None:
                conn.rollback()
                return error(404, "not found")
            c.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
            if c.fetchone() is None:
                conn.rollback()
                return error(422, "user_id: no such user", "user_id")
            new_id = str(uuid.uuid4())
            cols = ["id", "city_id"] + list(values)
            c.execute(
                f"INSERT INTO places ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                [new_id, city_id] + list(values.values()),
            )
            c.execute(f"SELECT {COLUMNS} FROM places t WHERE t.id = %s", (new_id,))
            row = c.fetchone()
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return jsonify(place(row)), 201
