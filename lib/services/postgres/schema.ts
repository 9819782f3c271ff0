/**
 * The PostgreSQL ledger's schema, as numbered migrations `PostgresCreditStore.migrate()` applies in order, each
 * in its own transaction, recorded in `<schema>.schema_migrations`. Amounts are integer thousandths of a credit
 * (`bigint`, exact) in the ledger tables, and `numeric(20,3)` credits in the generation records a host joins
 * with its own tables. `{s}` is the schema's quoted name.
 *
 * Tables:
 * - `accounts(account, start_milli, used_milli, held_milli, expired_holds, created_at)`: one row per account as
 *   the host names it; `balance = start − used − held` is never below zero (a CHECK).
 * - `holds(hold_id, account, milli, expires_at)`: credits held for generations under way (hold id = the
 *   generation id); an expired hold is released the next time its account is touched.
 * - `settlements(hold_id, account, charged_milli, unpaid_milli, settled_at)`: one row per settled hold: a retried
 *   settle answers it and charges nothing more.
 * - `usage_by_model(account, model, used_milli)`.
 * - `generations(id, account, provider_id, endpoint, model, upstream, failed_upstreams, stream, outcome, usage,
 *   credits_used, unpaid, cancelled, finish_reason, error, time_to_first_token_ms, duration_ms, created_at,
 *   settled_at)`: the record of every settled generation (`usage` holds the priced classes).
 * - `budget_spend(account, window_id, slice, spent_milli)`: what each budget window spent (a rolling window by
 *   slice).
 */
export const MIGRATIONS: ReadonlyArray<{ version: number; name: string; sql: string }> = [
  {
    version: 1,
    name: 'ledger',
    sql: `
CREATE TABLE {s}.accounts (
  account       text PRIMARY KEY,
  start_milli   bigint NOT NULL CHECK (start_milli >= 0),
  used_milli    bigint NOT NULL DEFAULT 0 CHECK (used_milli >= 0),
  held_milli    bigint NOT NULL DEFAULT 0 CHECK (held_milli >= 0),
  expired_holds bigint NOT NULL DEFAULT 0,
  created_at    timestamptz NOT NULL DEFAULT now(),
  CHECK (used_milli + held_milli <= start_milli)
);
CREATE TABLE {s}.holds (
  hold_id    text PRIMARY KEY,
  account    text NOT NULL REFERENCES {s}.accounts (account) ON DELETE CASCADE,
  milli      bigint NOT NULL CHECK (milli >= 0),
  expires_at timestamptz NOT NULL
);
CREATE INDEX holds_by_account_expiry ON {s}.holds (account, expires_at);
CREATE TABLE {s}.settlements (
  hold_id       text PRIMARY KEY,
  account       text NOT NULL,
  charged_milli bigint NOT NULL,
  unpaid_milli  bigint NOT NULL,
  settled_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX settlements_by_time ON {s}.settlements (settled_at);
CREATE TABLE {s}.usage_by_model (
  account    text NOT NULL,
  model      text NOT NULL,
  used_milli bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (account, model)
);
CREATE TABLE {s}.generations (
  id                     text PRIMARY KEY,
  account                text NOT NULL,
  provider_id            text,
  endpoint               text NOT NULL,
  model                  text NOT NULL,
  upstream               text,
  failed_upstreams       jsonb NOT NULL DEFAULT '[]',
  stream                 boolean NOT NULL,
  outcome                text NOT NULL,
  usage                  jsonb NOT NULL,
  credits_used           numeric(20, 3) NOT NULL,
  unpaid                 numeric(20, 3) NOT NULL,
  cancelled              boolean NOT NULL,
  finish_reason          text,
  error                  text,
  time_to_first_token_ms integer,
  duration_ms            integer NOT NULL,
  created_at             timestamptz NOT NULL,
  settled_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX generations_by_account ON {s}.generations (account, settled_at DESC, id DESC);
CREATE INDEX generations_by_provider_id ON {s}.generations (account, provider_id, settled_at DESC);
CREATE TABLE {s}.budget_spend (
  account     text NOT NULL,
  window_id   text NOT NULL,
  slice       bigint NOT NULL DEFAULT 0,
  spent_milli bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (account, window_id, slice)
);

-- Releases the account's expired holds (its row locked by the caller).
CREATE FUNCTION {s}.release_expired(p_account text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_milli bigint;
  v_count bigint;
BEGIN
  WITH gone AS (DELETE FROM {s}.holds WHERE account = p_account AND expires_at <= clock_timestamp() RETURNING milli)
  SELECT coalesce(sum(milli), 0), count(*) INTO v_milli, v_count FROM gone;
  IF v_count > 0 THEN
    UPDATE {s}.accounts SET held_milli = held_milli - v_milli, expired_holds = expired_holds + v_count WHERE account = p_account;
  END IF;
END $$;

-- A budget window's spend: a calendar window's row (slice 0), or a rolling window's slices from the one its span
-- began in (older ones dropped), with when its oldest spend ages out (ms since the epoch).
CREATE FUNCTION {s}.budget_spent(p_account text, p_window text, p_slice bigint, p_span bigint, p_now bigint, OUT spent bigint, OUT ages_out bigint) LANGUAGE plpgsql AS $$
DECLARE
  v_from bigint;
  v_oldest bigint;
BEGIN
  IF p_slice > 0 THEN
    v_from := floor((p_now - p_span)::numeric / p_slice);
    DELETE FROM {s}.budget_spend WHERE account = p_account AND window_id = p_window AND slice < v_from;
    SELECT coalesce(sum(spent_milli), 0), min(slice) INTO spent, v_oldest FROM {s}.budget_spend WHERE account = p_account AND window_id = p_window;
    ages_out := CASE WHEN v_oldest IS NULL THEN p_now ELSE (v_oldest + 1) * p_slice + p_span END;
  ELSE
    SELECT coalesce(max(spent_milli), 0) INTO spent FROM {s}.budget_spend WHERE account = p_account AND window_id = p_window AND slice = 0;
    ages_out := 0;
  END IF;
END $$;

-- Holds p_milli under p_hold for p_ttl_ms, in one transaction with the account's row locked. Codes: 1 held,
-- 0 not enough available, -1 unknown account, -2 the hold id exists or was settled, -5 the budget window
-- (p_window, '' for none) refused it (with its spend, the account's holds and when its oldest spend ages out).
CREATE FUNCTION {s}.reserve(p_account text, p_hold text, p_milli bigint, p_ttl_ms bigint, p_window text, p_limit bigint, p_slice bigint, p_span bigint,
  OUT code integer, OUT spent bigint, OUT held bigint, OUT ages_out bigint) LANGUAGE plpgsql AS $$
DECLARE
  a {s}.accounts%ROWTYPE;
  v_now bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
BEGIN
  spent := 0; held := 0; ages_out := 0;
  PERFORM 1 FROM {s}.accounts WHERE account = p_account FOR UPDATE;
  IF NOT FOUND THEN code := -1; RETURN; END IF;
  PERFORM {s}.release_expired(p_account);
  SELECT * INTO a FROM {s}.accounts WHERE account = p_account;
  IF EXISTS (SELECT 1 FROM {s}.holds WHERE hold_id = p_hold) OR EXISTS (SELECT 1 FROM {s}.settlements WHERE hold_id = p_hold) THEN code := -2; RETURN; END IF;
  IF p_milli > a.start_milli - a.used_milli - a.held_milli THEN code := 0; RETURN; END IF;
  IF p_window <> '' THEN
    SELECT b.spent, b.ages_out INTO spent, ages_out FROM {s}.budget_spent(p_account, p_window, p_slice, p_span, v_now) b;
    held := a.held_milli;
    IF spent + a.held_milli + p_milli > p_limit THEN code := -5; RETURN; END IF;
  END IF;
  INSERT INTO {s}.holds (hold_id, account, milli, expires_at) VALUES (p_hold, p_account, p_milli, clock_timestamp() + p_ttl_ms * interval '1 millisecond');
  UPDATE {s}.accounts SET held_milli = held_milli + p_milli WHERE account = p_account;
  code := 1;
END $$;

-- Settles p_hold, once: releases it, charges least(p_cost, what is available), adds the charge to the budget
-- window's spend, keeps the record (p_record, NULL for none) — one transaction, the account's row locked, so a
-- retried or concurrent settle of the same hold answers the first one's charge. Code -1: unknown account.
CREATE FUNCTION {s}.settle(p_account text, p_hold text, p_model text, p_cost bigint, p_record jsonb,
  p_window text, p_soft bigint, p_slice bigint, p_span bigint,
  OUT code integer, OUT charged bigint, OUT unpaid bigint, OUT spent bigint, OUT crossed boolean) LANGUAGE plpgsql AS $$
DECLARE
  a {s}.accounts%ROWTYPE;
  v_held bigint;
  v_before bigint;
  v_now bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
BEGIN
  crossed := false;
  PERFORM 1 FROM {s}.accounts WHERE account = p_account FOR UPDATE;
  IF NOT FOUND THEN code := -1; charged := 0; unpaid := 0; RETURN; END IF;
  SELECT s.charged_milli, s.unpaid_milli INTO charged, unpaid FROM {s}.settlements s WHERE s.hold_id = p_hold;
  IF FOUND THEN code := 2; RETURN; END IF;
  PERFORM {s}.release_expired(p_account);
  DELETE FROM {s}.holds WHERE hold_id = p_hold AND account = p_account RETURNING milli INTO v_held;
  IF v_held IS NOT NULL THEN UPDATE {s}.accounts SET held_milli = held_milli - v_held WHERE account = p_account; END IF;
  SELECT * INTO a FROM {s}.accounts WHERE account = p_account;
  charged := least(p_cost, greatest(0, a.start_milli - a.used_milli - a.held_milli));
  unpaid := p_cost - charged;
  IF charged > 0 THEN
    UPDATE {s}.accounts SET used_milli = used_milli + charged WHERE account = p_account;
    INSERT INTO {s}.usage_by_model (account, model, used_milli) VALUES (p_account, p_model, charged)
      ON CONFLICT (account, model) DO UPDATE SET used_milli = {s}.usage_by_model.used_milli + EXCLUDED.used_milli;
  END IF;
  INSERT INTO {s}.settlements (hold_id, account, charged_milli, unpaid_milli) VALUES (p_hold, p_account, charged, unpaid);
  IF p_window <> '' THEN
    SELECT b.spent INTO v_before FROM {s}.budget_spent(p_account, p_window, p_slice, p_span, v_now) b;
    INSERT INTO {s}.budget_spend (account, window_id, slice, spent_milli)
      VALUES (p_account, p_window, CASE WHEN p_slice > 0 THEN floor(v_now::numeric / p_slice) ELSE 0 END, charged)
      ON CONFLICT (account, window_id, slice) DO UPDATE SET spent_milli = {s}.budget_spend.spent_milli + EXCLUDED.spent_milli;
    spent := v_before + charged;
    crossed := v_before < p_soft AND spent >= p_soft;
  END IF;
  IF p_record IS NOT NULL THEN
    INSERT INTO {s}.generations (id, account, provider_id, endpoint, model, upstream, failed_upstreams, stream, outcome, usage, credits_used, unpaid,
      cancelled, finish_reason, error, time_to_first_token_ms, duration_ms, created_at)
    VALUES (p_record->>'id', p_account, p_record->>'provider_id', p_record->>'endpoint', p_record->>'model', p_record->>'upstream',
      coalesce(p_record->'failed_upstreams', '[]'::jsonb), (p_record->>'stream')::boolean, p_record->>'outcome', p_record->'usage',
      charged::numeric / 1000, unpaid::numeric / 1000, (p_record->>'cancelled')::boolean, p_record->>'finish_reason', p_record->>'error',
      (p_record->>'time_to_first_token_ms')::integer, (p_record->>'duration_ms')::integer, (p_record->>'created_at')::timestamptz)
    ON CONFLICT (id) DO NOTHING;
  END IF;
  code := 1;
END $$;
`,
  },
];
