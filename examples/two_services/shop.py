"""The shop: pays orders, publishing ``order_paid`` in the same transaction as the order.

    NOTIFIED_DATABASE_URL=postgresql://... python shop.py 5        # creates the tables, pays 5 orders

It knows nothing about who listens: billing and the mailer each subscribe with their own group.
"""

import os
import sys

from models import Base, Event, Order
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session


def pay_order(engine: Engine, email: str, total_cents: int) -> int:
    """Record a paid order and publish ``order_paid``: both exist, or neither does. Returns the order's id."""
    with Session(engine) as session, session.begin():
        order = Order(email=email, total_cents=total_cents)
        session.add(order)
        session.flush()  # the order's id, for the event's payload
        session.add(Event(name="order_paid", payload={"order_id": order.id, "email": email, "total": total_cents}))
        return order.id


def main() -> None:
    url = os.environ.get("NOTIFIED_DATABASE_URL")
    if not url:
        raise SystemExit("set NOTIFIED_DATABASE_URL to a postgresql:// URL")
    engine = create_engine(url)
    Base.metadata.create_all(engine)  # a real application runs migrations (see ../alembic_project)
    for n in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        order_id = pay_order(engine, f"customer{n}@example.com", 1000 + n)
        print(f"order {order_id} paid")
    engine.dispose()


if __name__ == "__main__":
    main()
