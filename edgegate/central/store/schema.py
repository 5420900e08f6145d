"""The central store's schema, for SQLite and PostgreSQL, run by :mod:`edgegate.migrations`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgegate.central.store.model import DEAD_PAYLOAD_PREFIX, SchemaError
from edgegate.migrations import Migration, ledger_ddl


@dataclass(frozen=True, slots=True)
class CentralMigration:
    """One migration for both backends: common SQL plus each backend's own statements."""

    version: int
    name: str
    sql: str
    """Common SQL with ``{BIGINT}``, ``{BLOB}``, ``{ID}`` placeholders."""
    sqlite_extra: str = ""
    postgres_extra: str = ""


MIGRATIONS: tuple[CentralMigration, ...] = (
    CentralMigration(
        1,
        "gate events, heads, dead letters, admission reviews",
        """
        CREATE TABLE gate_events (
            gate TEXT NOT NULL,
            seq {BIGINT} NOT NULL,
            wall_ns {BIGINT} NOT NULL,
            mono_ns {BIGINT} NOT NULL,
            boot_id TEXT NOT NULL,
            type TEXT NOT NULL,
            lane TEXT,
            version {BIGINT} NOT NULL,
            data {BLOB} NOT NULL,
            prev_hash {BLOB} NOT NULL,
            hash {BLOB} NOT NULL,
            received_at_ns {BIGINT} NOT NULL,
            PRIMARY KEY (gate, seq)
        );
        CREATE TABLE gate_heads (
            gate TEXT PRIMARY KEY,
            seq {BIGINT} NOT NULL,
            hash {BLOB} NOT NULL,
            updated_at_ns {BIGINT} NOT NULL
        );
        CREATE TABLE dead_letters (
            id {ID},
            received_at_ns {BIGINT} NOT NULL,
            source TEXT NOT NULL,
            gate TEXT,
            payload {BLOB} NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX dead_letters_gate ON dead_letters (gate, id);
        CREATE TABLE admission_reviews (
            gate TEXT NOT NULL,
            seq {BIGINT} NOT NULL,
            plate TEXT NOT NULL,
            credential_kind TEXT NOT NULL,
            credential_id TEXT NOT NULL,
            revoked_at_ns {BIGINT} NOT NULL,
            decided_at_ns {BIGINT} NOT NULL,
            noted_at_ns {BIGINT} NOT NULL,
            PRIMARY KEY (gate, seq)
        );
        """,
        sqlite_extra="""
        CREATE TRIGGER gate_events_no_update BEFORE UPDATE ON gate_events
        BEGIN SELECT RAISE(ABORT, 'gate_events are append-only: UPDATE refused'); END;
        CREATE TRIGGER gate_events_no_delete BEFORE DELETE ON gate_events
        BEGIN SELECT RAISE(ABORT, 'gate_events are append-only: DELETE refused'); END;
        """,
        postgres_extra="""
        CREATE FUNCTION edgegate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'gate_events are append-only: % refused', TG_OP;
        END $$;
        CREATE TRIGGER gate_events_append_only BEFORE UPDATE OR DELETE ON gate_events
            FOR EACH ROW EXECUTE FUNCTION edgegate_append_only();
        """,
    ),
    CentralMigration(
        2,
        "bounded dead letters: payload size, SHA-256 and prefix; drops per gate",
        """
        ALTER TABLE dead_letters ADD COLUMN payload_size {BIGINT} NOT NULL DEFAULT 0;
        ALTER TABLE dead_letters ADD COLUMN payload_sha256 {BLOB};
        CREATE TABLE dead_letter_drops (
            gate TEXT PRIMARY KEY,
            letters {BIGINT} NOT NULL,
            payload_bytes {BIGINT} NOT NULL,
            last_dropped_at_ns {BIGINT} NOT NULL
        );
        """,
        # Rows written before: hashed and measured whole, then cut to the prefix like new ones.
        sqlite_extra="UPDATE dead_letters SET payload_size = length(payload),"
        " payload_sha256 = edgegate_sha256(payload),"
        f" payload = substr(payload, 1, {DEAD_PAYLOAD_PREFIX});",
        postgres_extra="UPDATE dead_letters SET payload_size = length(payload),"
        " payload_sha256 = sha256(payload),"
        f" payload = substr(payload, 1, {DEAD_PAYLOAD_PREFIX});",
    ),
    CentralMigration(
        3,
        "park projections: positions, vehicles inside, gates' state and faults; gate statuses",
        """
        CREATE TABLE projection_positions (
            projection TEXT NOT NULL,
            gate TEXT NOT NULL,
            seq {BIGINT} NOT NULL,
            PRIMARY KEY (projection, gate)
        );
        CREATE TABLE park_vehicles (
            plate TEXT PRIMARY KEY,
            inside {BIGINT} NOT NULL,
            category TEXT,
            gate TEXT NOT NULL,
            seq {BIGINT} NOT NULL,
            at_ns {BIGINT} NOT NULL,
            lane TEXT,
            credential_id TEXT,
            permit_until_ns {BIGINT},
            unauthorised {BIGINT} NOT NULL
        );
        CREATE INDEX park_vehicles_inside ON park_vehicles (inside, category, at_ns);
        CREATE TABLE park_gates (
            gate TEXT PRIMARY KEY,
            last_seq {BIGINT} NOT NULL,
            last_at_ns {BIGINT} NOT NULL,
            events {BIGINT} NOT NULL,
            mode TEXT,
            mode_at_ns {BIGINT},
            allowlist_version {BIGINT},
            allowlist_at_ns {BIGINT}
        );
        CREATE TABLE park_gate_faults (
            gate TEXT NOT NULL,
            device TEXT NOT NULL,
            code TEXT NOT NULL,
            message TEXT NOT NULL,
            seq {BIGINT} NOT NULL,
            since_ns {BIGINT} NOT NULL,
            PRIMARY KEY (gate, device)
        );
        CREATE TABLE gate_status (
            gate TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            head_seq {BIGINT} NOT NULL,
            synced_seq {BIGINT} NOT NULL,
            allowlist_version {BIGINT} NOT NULL,
            at_ns {BIGINT} NOT NULL,
            noted_at_ns {BIGINT} NOT NULL
        );
        """,
    ),
    CentralMigration(
        4,
        "blacklist proposals from overstays, their decisions and publications; versions",
        """
        CREATE TABLE blacklist_proposals (
            id {ID},
            gate TEXT NOT NULL,
            seq {BIGINT} NOT NULL,
            plate TEXT NOT NULL,
            category TEXT,
            entered_at_ns {BIGINT} NOT NULL,
            limit_kind TEXT NOT NULL,
            deadline_ns {BIGINT} NOT NULL,
            dwell_ns {BIGINT} NOT NULL,
            proposed_at_ns {BIGINT} NOT NULL,
            refreshed_at_ns {BIGINT} NOT NULL,
            left_at_ns {BIGINT},
            left_gate TEXT,
            state TEXT NOT NULL,
            operator TEXT,
            reason TEXT,
            decided_at_ns {BIGINT},
            UNIQUE (gate, seq)
        );
        CREATE INDEX blacklist_proposals_state ON blacklist_proposals (state, id);
        CREATE TABLE blacklist_publications (
            proposal_id {BIGINT} NOT NULL,
            gate TEXT NOT NULL,
            base_version {BIGINT} NOT NULL,
            version {BIGINT} NOT NULL,
            published_at_ns {BIGINT},
            PRIMARY KEY (proposal_id, gate)
        );
        CREATE TABLE allowlist_versions (
            gate TEXT PRIMARY KEY,
            version {BIGINT} NOT NULL
        );
        """,
    ),
    CentralMigration(
        5,
        "every allow-list publication per gate, signed bytes as published",
        """
        CREATE TABLE allowlist_publications (
            gate TEXT NOT NULL,
            version {BIGINT} NOT NULL,
            kind TEXT NOT NULL,
            base_version {BIGINT},
            payload {BLOB} NOT NULL,
            recorded_at_ns {BIGINT} NOT NULL,
            recorded_by TEXT NOT NULL,
            PRIMARY KEY (gate, version)
        );
        CREATE INDEX allowlist_publications_kind ON allowlist_publications (gate, kind, version);
        """,
    ),
    CentralMigration(
        6,
        "park-wide consumption: the outbox of deltas recorded with the consumption",
        """
        CREATE TABLE park_entry_outbox (
            gate TEXT NOT NULL,
            version {BIGINT} NOT NULL,
            site TEXT NOT NULL,
            source TEXT NOT NULL,
            recorded_at_ns {BIGINT} NOT NULL,
            published_at_ns {BIGINT},
            PRIMARY KEY (gate, version)
        );
        CREATE INDEX park_entry_outbox_pending
            ON park_entry_outbox (published_at_ns, recorded_at_ns);
        """,
    ),
    CentralMigration(
        7,
        "the park chain: one signed message per site per commit, its sequence and outbox",
        """
        DROP TABLE park_entry_outbox;
        CREATE TABLE park_sequences (
            site TEXT PRIMARY KEY,
            seq {BIGINT} NOT NULL
        );
        CREATE TABLE park_outbox (
            site TEXT NOT NULL,
            seq {BIGINT} NOT NULL,
            payload {BLOB} NOT NULL,
            source TEXT NOT NULL,
            recorded_at_ns {BIGINT} NOT NULL,
            published_at_ns {BIGINT},
            PRIMARY KEY (site, seq)
        );
        CREATE INDEX park_outbox_pending ON park_outbox (published_at_ns, site, seq);
        CREATE INDEX park_outbox_recorded ON park_outbox (site, recorded_at_ns);
        CREATE TABLE gate_sites (
            gate TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            noted_at_ns {BIGINT} NOT NULL
        );
        """,
    ),
    CentralMigration(
        8,
        "presence read in its order: the vehicles inside, hazmat first, longest inside first",
        # The expression and columns are projections._DANGER_ORDER's: a page of presence
        # (the park API's) reads its first rows instead of sorting every vehicle inside.
        """
        DROP INDEX park_vehicles_inside;
        CREATE INDEX park_vehicles_presence ON park_vehicles (
            (CASE category WHEN 'hazmat' THEN 0 WHEN 'hazwaste' THEN 1 ELSE 2 END), at_ns, plate
        ) WHERE inside = 1;
        """,
    ),
)

LATEST = MIGRATIONS[-1].version

_SQLITE_TYPES = {
    "BIGINT": "INTEGER",
    "BLOB": "BLOB",
    "ID": "INTEGER PRIMARY KEY AUTOINCREMENT",
}
# gate_events is a rowid table with its (gate, seq) key as an index, not WITHOUT ROWID:
# events arrive in key order, so each insert appends to the rightmost leaf of both B-trees,
# which SQLite does cheaply for a rowid table ("balance_quick") but not for a WITHOUT ROWID
# one (~8% fewer instructions per stored event). Stores created by earlier versions keep
# their WITHOUT ROWID table; the two behave identically.
_POSTGRES_TYPES = {
    "BIGINT": "BIGINT",
    "BLOB": "BYTEA",
    "ID": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}

_MIGRATIONS_TABLE = ledger_ddl("BIGINT")
"""The ledger as central's stores have it (``applied_at_ns BIGINT``)."""


def migrations_for(backend: str) -> tuple[Migration, ...]:
    """``MIGRATIONS`` written out for ``backend`` (``sqlite`` or ``postgresql``)."""
    sqlite = backend == "sqlite"
    types = _SQLITE_TYPES if sqlite else _POSTGRES_TYPES
    return tuple(
        Migration(
            m.version,
            m.name,
            m.sql.format(**types) + (m.sqlite_extra if sqlite else m.postgres_extra),
        )
        for m in MIGRATIONS
    )


def newer_error(description: str) -> Callable[[int, int], SchemaError]:
    """The runner's ``newer``: the store at ``description`` was written by newer software."""

    def newer(version: int, known: int) -> SchemaError:
        return SchemaError(
            f"{description}: schema version {version} is newer than this "
            f"software knows ({known}); upgrade edgegate"
        )

    return newer
