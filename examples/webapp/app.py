"""A small Flask application that publishes an event in the same transaction as the row it is about.

    NOTIFIED_DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME flask --app app run     # in this directory
    curl -X POST localhost:5000/signup -H 'Content-Type: application/json' -d '{"email": "ada@example.com"}'

POST /signup inserts a User and a ``user_signed_up`` Event in one session and one transaction: the event exists
if and only if the user does (a duplicate email rolls both back). worker.py handles the event.
"""

import os

from flask import Flask, Response, jsonify, request
from models import Base, Event, User
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session


def create_app(database_url: str | None = None) -> Flask:
    """The application, on ``database_url`` or the environment variable NOTIFIED_DATABASE_URL."""
    url = database_url or os.environ.get("NOTIFIED_DATABASE_URL")
    if not url:
        raise RuntimeError("set NOTIFIED_DATABASE_URL to a postgresql:// URL")
    engine: Engine = create_engine(url)
    Base.metadata.create_all(engine)  # tables and notify trigger; a real application runs Alembic migrations
    app = Flask(__name__)
    app.extensions["engine"] = engine

    @app.post("/signup")
    def signup() -> tuple[Response, int]:
        email = str((request.get_json(silent=True) or {}).get("email") or "").strip().lower()
        if "@" not in email:
            return jsonify(error="a JSON body with a valid email is required"), 400
        try:
            with Session(engine) as session, session.begin():  # one transaction: commit at the end of the block
                user = User(email=email)
                session.add(user)
                session.flush()  # gives the user its id, for the event's payload
                user_id = user.id
                session.add(Event(name="user_signed_up", payload={"user_id": user_id, "email": email}))
        except IntegrityError:  # the email is taken: neither the user nor the event was written
            return jsonify(error=f"{email} has already signed up"), 409
        return jsonify(id=user_id, email=email), 201

    @app.get("/users/<int:user_id>")
    def get_user(user_id: int) -> tuple[Response, int]:
        with Session(engine) as session:
            user = session.get(User, user_id)
            if user is None:
                return jsonify(error=f"no user {user_id}"), 404
            welcomed = user.welcomed_at.isoformat() if user.welcomed_at else None
            return jsonify(id=user.id, email=user.email, welcomed_at=welcomed), 200

    return app
