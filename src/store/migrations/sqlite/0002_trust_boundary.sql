-- The IdP's own `sub` beside the identifier (which may be another claim):
-- back-channel logout and refresh name the user by `sub`. Keep in step
-- with the other database's 0002.
ALTER TABLE sessions ADD COLUMN idp_sub TEXT;
UPDATE sessions SET idp_sub = subject;
CREATE INDEX sessions_idp_sub ON sessions (idp, idp_sub);
ALTER TABLE identities ADD COLUMN idp_sub TEXT;

-- ID tokens a logout has ended (SHA-256, hex): never a bearer credential
-- again. Kept until the token would have expired anyway.
CREATE TABLE ended_tokens (
    token_hash  TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);

-- Back-channel logout tokens already used, by issuer and `jti`, shared by
-- every replica: each is accepted once.
CREATE TABLE logout_tokens_seen (
    iss         TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (iss, jti)
);
