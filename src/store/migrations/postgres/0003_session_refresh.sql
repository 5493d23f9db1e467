-- Sessions kept true to the IdP (SPEC 4a). Keep in step with the other
-- database's 0003.
-- The refresh token, sealed under session.secret (never stored in clear).
ALTER TABLE sessions ADD COLUMN refresh_token TEXT;
-- When the IdP last vouched for the session: the login, or the last
-- successful refresh.
ALTER TABLE sessions ADD COLUMN validated_at BIGINT;
UPDATE sessions SET validated_at = created_at;
-- A refresh in progress (or put off after the IdP could not be reached):
-- until then no replica starts another for this session.
ALTER TABLE sessions ADD COLUMN refresh_held_until BIGINT;
