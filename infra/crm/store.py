"""The CRM's data in SQLite (the standard library's ``sqlite3``), with idempotent writes.

SQLite because the reference CRM is a single small process that tests and ``parley up``
start and throw away: one file (or ``:memory:``), no server. Every call takes one lock and
every write is one transaction, so the handlers (run on Starlette's thread pool) never
interleave.

**Idempotency.** A write carries a client-chosen key (the ``Idempotency-Key`` header,
which Parley fills with the action request's event id). :meth:`CrmStore.idempotent` runs
the write's effect and records its answer *in the same transaction*: the same key again
returns the recorded answer without doing anything, so a request repeated after a
timeout or a worker crash moves money once. The key is remembered with a fingerprint of
the request (method, path, body); the same key with another request is refused (422),
as Stripe does. Refusals (4xx) are recorded too: the answer to a key never changes.

Money is kept in cents (integers) and given as ``{"value": 12.5, "currency": "EUR"}``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from infra.crm.errors import CrmProblem

__all__ = ["DEMO_CUSTOMER", "CrmStore", "fingerprint"]

DEMO_CUSTOMER = "c-1001"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL, currency TEXT NOT NULL, balance_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cards (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id),
    card_type TEXT NOT NULL, last4 TEXT NOT NULL, status TEXT NOT NULL,
    blocked_at INTEGER);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL,
    carrier TEXT, tracking_number TEXT, estimated_delivery TEXT, items TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, from_account TEXT NOT NULL,
    recipient TEXT NOT NULL, amount_cents INTEGER NOT NULL, currency TEXT NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, description TEXT NOT NULL,
    email TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ticket_callbacks (
    ticket_id TEXT PRIMARY KEY REFERENCES tickets(id), url TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    client_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL, body TEXT NOT NULL, created_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, key));
"""

_DEMO_ACCOUNTS = [("current", "EUR", 245_075), ("savings", "EUR", 1_200_000)]
_DEMO_CARDS = [("debit", "4821"), ("credit", "9034")]
_DEMO_ORDERS = [
    ("12345", "shipped", "DHL", "JD014600003828", "2026-12-09", ["Wireless headphones"]),
    ("54321", "processing", None, None, "2026-12-14", ["Running shoes", "Socks (3 pairs)"]),
    ("99999", "delivered", "UPS", "1Z999AA10123456784", "2026-12-02", ["Coffee grinder"]),
    ("11111", "cancelled", None, None, None, ["Desk lamp"]),
]

Effect = Callable[[sqlite3.Connection], tuple[int, dict[str, Any]]]


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What identifies a request under an idempotency key."""
    return hashlib.sha256(b"%s %s\n%s" % (method.encode(), path.encode(), body)).hexdigest()


def money(cents: int, currency: str) -> dict[str, Any]:
    return {"value": cents / 100, "currency": currency}


class CrmStore:
    """The CRM's tables; every method is one locked call (one transaction for writes)."""

    def __init__(self, database: str = ":memory:", *, enrol_unknown: bool = True) -> None:
        self.enrol_unknown = enrol_unknown
        self._lock = threading.Lock()
        self._db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if database != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        with self._lock:
            self._db.executescript(_SCHEMA)
            if self._db.execute("SELECT COUNT(*) FROM customers").fetchone()[0] == 0:
                self._transaction(self._seed)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- plumbing -----------------------------------------------------------------
    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = work(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result

    def _seed(self, db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO customers VALUES (?, ?, ?)",
                   (DEMO_CUSTOMER, "Anna Novak", "anna@example.com"))
        self._give_products(db, DEMO_CUSTOMER)
        for order_id, status, carrier, tracking, eta, items in _DEMO_ORDERS:
            db.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (order_id, DEMO_CUSTOMER, status, carrier, tracking, eta,
                        json.dumps(items)))

    @staticmethod
    def _give_products(db: sqlite3.Connection, customer_id: str) -> None:
        for n, (kind, currency, cents) in enumerate(_DEMO_ACCOUNTS, 1):
            db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?, ?)",
                       (f"a-{customer_id}-{n}", customer_id, kind, currency, cents))
        for n, (card_type, last4) in enumerate(_DEMO_CARDS, 1):
            db.execute("INSERT INTO cards VALUES (?, ?, ?, ?, 'active', NULL)",
                       (f"k-{customer_id}-{n}", customer_id, card_type, last4))

    def _customer(self, db: sqlite3.Connection, customer_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)).fetchone()
        if row is not None:
            return row
        if not self.enrol_unknown:
            raise CrmProblem(404, f"no customer {customer_id!r}")
        db.execute("INSERT INTO customers VALUES (?, ?, ?)",
                   (customer_id, "Demo customer", "customer@example.com"))
        self._give_products(db, customer_id)
        return db.execute(
            "SELECT * FROM customers WHERE id = ?", (customer_id,)).fetchone()

    # --- reads --------------------------------------------------------------------
    def customer(self, customer_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._transaction(lambda db: self._customer(db, customer_id))
            return {"id": row["id"], "name": row["name"], "email": row["email"]}

    def accounts(self, customer_id: str) -> list[dict[str, Any]]:
        with self._lock:
            def read(db: sqlite3.Connection) -> list[sqlite3.Row]:
                self._customer(db, customer_id)
                return db.execute("SELECT * FROM accounts WHERE customer_id = ? ORDER BY id",
                                  (customer_id,)).fetchall()
            rows = self._transaction(read)
        return [{"id": r["id"], "kind": r["kind"],
                 "balance": money(r["balance_cents"], r["currency"])} for r in rows]

    def cards(self, customer_id: str) -> list[dict[str, Any]]:
        with self._lock:
            def read(db: sqlite3.Connection) -> list[sqlite3.Row]:
                self._customer(db, customer_id)
                return db.execute("SELECT * FROM cards WHERE customer_id = ? ORDER BY id",
                                  (customer_id,)).fetchall()
            rows = self._transaction(read)
        return [_card(r) for r in rows]

    def transfers(self, customer_id: str) -> list[dict[str, Any]]:
        """The money ``customer_id`` sent, oldest first (one row per transfer made)."""
        with self._lock:
            def read(db: sqlite3.Connection) -> list[sqlite3.Row]:
                self._customer(db, customer_id)
                return db.execute("SELECT * FROM transfers WHERE customer_id = ? "
                                  "ORDER BY created_at, rowid", (customer_id,)).fetchall()
            rows = self._transaction(read)
        return [{"reference": r["id"], "from_account": r["from_account"],
                 "recipient": r["recipient"], "amount": money(r["amount_cents"], r["currency"]),
                 "created_at": r["created_at"]} for r in rows]

    def order(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row is None:
            raise CrmProblem(404, f"no order {order_id!r}")
        return {"id": row["id"], "status": row["status"], "carrier": row["carrier"],
                "tracking_number": row["tracking_number"],
                "estimated_delivery": row["estimated_delivery"],
                "items": json.loads(row["items"])}

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        if row is None:
            raise CrmProblem(404, f"no ticket {ticket_id!r}")
        return dict(row)

    def count(self, table: str) -> int:
        """Rows of ``table`` (tests: an effect happened once)."""
        if table not in {"transfers", "tickets", "idempotency"}:
            raise ValueError(table)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # --- writes -------------------------------------------------------------------
    def idempotent(self, client_id: str, key: str, request_fingerprint: str,
                   effect: Effect) -> tuple[int, dict[str, Any], bool]:
        """Run ``effect`` once per ``(client_id, key)``: ``(status, body, replayed)``.

        ``effect`` returns the answer or raises :class:`CrmProblem` (a 4xx, recorded as the
        key's answer too); anything else rolls back and records nothing."""
        with self._lock:
            def once(db: sqlite3.Connection) -> tuple[int, dict[str, Any], bool]:
                seen = db.execute("SELECT * FROM idempotency WHERE client_id = ? AND key = ?",
                                  (client_id, key)).fetchone()
                if seen is not None:
                    if seen["fingerprint"] != request_fingerprint:
                        raise CrmProblem(422, "this Idempotency-Key was used for another "
                                              "request")
                    return seen["status"], json.loads(seen["body"]), True
                db.execute("SAVEPOINT effect")
                try:
                    status, body = effect(db)
                except CrmProblem as problem:
                    db.execute("ROLLBACK TO effect")
                    if problem.status >= 500:
                        raise
                    status, body = problem.status, {"detail": problem.detail}
                db.execute("RELEASE effect")
                db.execute("INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                           (client_id, key, request_fingerprint, status, json.dumps(body),
                            int(time.time())))
                return status, body, False
            result: tuple[int, dict[str, Any], bool] = self._transaction(once)
            return result

    def block_cards(self, customer_id: str, card_type: str | None) -> Effect:
        def effect(db: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
            self._customer(db, customer_id)
            query, args = "SELECT * FROM cards WHERE customer_id = ?", [customer_id]
            if card_type:
                query, args = query + " AND card_type = ?", [*args, card_type]
            cards = db.execute(query + " ORDER BY id", args).fetchall()
            if not cards:
                raise CrmProblem(404, f"customer {customer_id!r} has no "
                                      f"{card_type + ' ' if card_type else ''}card")
            now = int(time.time())
            for card in cards:
                db.execute("UPDATE cards SET status = 'blocked', blocked_at = COALESCE("
                           "blocked_at, ?) WHERE id = ?", (now, card["id"]))
            rows = [db.execute("SELECT * FROM cards WHERE id = ?", (c["id"],)).fetchone()
                    for c in cards]
            return 200, {"blocked": [_card(r) for r in rows],
                          "last4": ", ".join(r["last4"] for r in rows)}
        return effect

    def transfer(self, customer_id: str, amount_cents: int, currency: str,
                 recipient: str) -> Effect:
        def effect(db: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
            self._customer(db, customer_id)
            account = db.execute(
                "SELECT * FROM accounts WHERE customer_id = ? AND kind = 'current' "
                "ORDER BY id LIMIT 1", (customer_id,)).fetchone()
            if account is None:
                raise CrmProblem(404, f"customer {customer_id!r} has no current account")
            if account["currency"] != currency:
                raise CrmProblem(422, f"the account is in {account['currency']}, "
                                      f"not {currency}")
            if account["balance_cents"] < amount_cents:
                raise CrmProblem(422, "insufficient funds")
            reference = f"TR-{uuid.uuid4().hex[:10].upper()}"
            db.execute("UPDATE accounts SET balance_cents = balance_cents - ? WHERE id = ?",
                       (amount_cents, account["id"]))
            db.execute("INSERT INTO transfers VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (reference, customer_id, account["id"], recipient, amount_cents,
                        currency, int(time.time())))
            balance = db.execute("SELECT balance_cents FROM accounts WHERE id = ?",
                                 (account["id"],)).fetchone()[0]
            return 201, {"reference": reference, "amount": money(amount_cents, currency),
                         "recipient": recipient, "from_account": account["id"],
                         "balance": money(balance, currency)}
        return effect

    def open_ticket(self, customer_id: str, description: str, email: str,
                    callback_url: str | None = None) -> Effect:
        """A new ticket; with ``callback_url``, 202: its outcome is POSTed there when it is
        resolved (:meth:`resolve_ticket`)."""
        def effect(db: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
            ticket_id = f"T-{uuid.uuid4().hex[:8].upper()}"
            db.execute("INSERT INTO tickets VALUES (?, ?, ?, ?, 'open', ?)",
                       (ticket_id, customer_id, description, email, int(time.time())))
            if callback_url:
                db.execute("INSERT INTO ticket_callbacks VALUES (?, ?)",
                           (ticket_id, callback_url))
                return 202, {"id": ticket_id, "status": "open", "callback": "registered"}
            return 201, {"id": ticket_id, "status": "open"}
        return effect

    def resolve_ticket(self, ticket_id: str) -> tuple[dict[str, Any], str | None]:
        """Mark a ticket resolved: the ticket and the URL to call back (None: none)."""
        with self._lock:
            def effect(db: sqlite3.Connection) -> tuple[dict[str, Any], str | None]:
                if db.execute("UPDATE tickets SET status = 'resolved' WHERE id = ?",
                              (ticket_id,)).rowcount == 0:
                    raise CrmProblem(404, f"no ticket {ticket_id!r}")
                row = db.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
                url = db.execute("SELECT url FROM ticket_callbacks WHERE ticket_id = ?",
                                 (ticket_id,)).fetchone()
                return dict(row), (url[0] if url else None)
            return self._transaction(effect)

    def ship_order(self, order_id: str, customer_id: str | None, carrier: str,
                   tracking_number: str) -> dict[str, Any]:
        """Mark an order shipped (created for ``customer_id`` when it does not exist: for
        drills and tests); returns it with its customer."""
        with self._lock:
            def effect(db: sqlite3.Connection) -> dict[str, Any]:
                row = db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
                if row is None and customer_id is None:
                    raise CrmProblem(404, f"no order {order_id!r}")
                if row is None:
                    db.execute("INSERT INTO orders VALUES (?, ?, 'processing', NULL, NULL, "
                               "NULL, '[]')", (order_id, customer_id))
                db.execute("UPDATE orders SET status = 'shipped', carrier = ?, "
                           "tracking_number = ? WHERE id = ?",
                           (carrier, tracking_number, order_id))
                found = db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
                return {"id": found["id"], "customer_id": found["customer_id"],
                        "status": found["status"], "carrier": found["carrier"],
                        "tracking_number": found["tracking_number"]}
            return self._transaction(effect)


def _card(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "card_type": row["card_type"], "last4": row["last4"],
            "status": row["status"]}
