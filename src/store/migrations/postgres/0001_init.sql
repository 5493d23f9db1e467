-- Portcullis store, PostgreSQL. Times are Unix seconds. Keep in step with
-- ../sqlite/0001_init.sql: the same tables, columns and constraints.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT,
    name        TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- A user's key at one IdP. `subject` is NULL for a user pre-provisioned
-- without one; the first login matches it by (idp, verified email).
CREATE TABLE identities (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    idp         TEXT NOT NULL,
    subject     TEXT,
    email       TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, idp)
);
CREATE UNIQUE INDEX identities_idp_subject ON identities (idp, subject);
CREATE INDEX identities_idp_email ON identities (idp, email);

CREATE TABLE memberships (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    org_id      TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('manual', 'policy', 'jit')),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, org_id)
);
CREATE INDEX memberships_org ON memberships (org_id);

CREATE TABLE membership_roles (
    user_id     TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    role        TEXT NOT NULL,
    PRIMARY KEY (user_id, org_id, role),
    FOREIGN KEY (user_id, org_id) REFERENCES memberships (user_id, org_id) ON DELETE CASCADE
);

-- Just-in-time entries added through the management API (the file's own
-- entries are never stored).
CREATE TABLE jit_email_domains (
    org_id      TEXT NOT NULL,
    domain      TEXT NOT NULL,
    PRIMARY KEY (org_id, domain)
);
CREATE TABLE jit_sso_connectors (
    org_id      TEXT NOT NULL,
    idp         TEXT NOT NULL,
    PRIMARY KEY (org_id, idp)
);
CREATE TABLE jit_roles (
    org_id      TEXT NOT NULL,
    role        TEXT NOT NULL,
    PRIMARY KEY (org_id, role)
);

-- Only the SHA-256 of a session id is kept.
CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    idp           TEXT NOT NULL,
    subject       TEXT NOT NULL,
    sid           TEXT,
    id_token      TEXT,
    claims        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_idp_subject ON sessions (idp, subject);

-- Keys shared by every replica (the assertion signing key).
CREATE TABLE signing_keys (
    name        TEXT PRIMARY KEY,
    kid         TEXT NOT NULL,
    private_key TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    user_id     TEXT,
    org_id      TEXT,
    before      TEXT,
    after       TEXT
);
CREATE INDEX audit_events_user ON audit_events (user_id);
CREATE INDEX audit_events_org ON audit_events (org_id);
