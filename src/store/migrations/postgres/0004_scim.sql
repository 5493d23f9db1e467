-- SCIM 2.0 directory feeds (SPEC 4b) and claims kept per identity (SPEC 4).
-- Keep in step with ../sqlite/0004_scim.sql.

-- Set while the directory has the user inactive or deleted: their logins
-- are refused and they have no session.
ALTER TABLE users ADD COLUMN deactivated_at BIGINT;

-- The identity's value of the SCIM feed's `match` claim (the directory's
-- externalId), and its claims as of the last login, refresh or SCIM change.
ALTER TABLE identities ADD COLUMN match_key TEXT;
ALTER TABLE identities ADD COLUMN claims TEXT;
CREATE INDEX identities_idp_match_key ON identities (idp, match_key);

-- A directory's user: the SCIM id is the Portcullis user id. `resource` is
-- the SCIM JSON as last written (without `groups` and `meta`).
CREATE TABLE scim_users (
    idp           TEXT NOT NULL,
    id            TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    user_name     TEXT NOT NULL,
    -- lower(user_name): userName is unique, case-insensitively (RFC 7643 4.1.1).
    user_name_key TEXT NOT NULL,
    external_id   TEXT,
    active        BIGINT NOT NULL,
    resource      TEXT NOT NULL,
    version       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (idp, id)
);
CREATE UNIQUE INDEX scim_users_user_name ON scim_users (idp, user_name_key);
CREATE INDEX scim_users_external_id ON scim_users (idp, external_id);

CREATE TABLE scim_groups (
    idp              TEXT NOT NULL,
    id               TEXT NOT NULL,
    display_name     TEXT NOT NULL,
    display_name_key TEXT NOT NULL,
    external_id      TEXT,
    -- The SCIM JSON as last written (without `members` and `meta`).
    resource         TEXT NOT NULL,
    version          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (idp, id)
);
CREATE INDEX scim_groups_display_name ON scim_groups (idp, display_name_key);
CREATE INDEX scim_groups_external_id ON scim_groups (idp, external_id);

CREATE TABLE scim_members (
    idp         TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    member_id   TEXT NOT NULL,
    -- The member's display name as the directory sent it, if it did.
    display     TEXT,
    PRIMARY KEY (idp, group_id, member_id),
    FOREIGN KEY (idp, group_id) REFERENCES scim_groups (idp, id) ON DELETE CASCADE,
    FOREIGN KEY (idp, member_id) REFERENCES scim_users (idp, id) ON DELETE CASCADE
);
CREATE INDEX scim_members_member ON scim_members (idp, member_id);
