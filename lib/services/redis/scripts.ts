import { createHash } from 'node:crypto';

/** A Lua script with its SHA-1, run with EVALSHA (EVAL once after a restart or a SCRIPT FLUSH). */
export interface Script {
  name: string;
  source: string;
  sha: string;
}

function script(name: string, body: string): Script {
  const source = `${PRELUDE}\n${body}`;
  return { name, source, sha: createHash('sha1').update(source).digest('hex') };
}

/**
 * Every script reads the time from Redis (one clock for all instances) and first releases the account's expired
 * holds, so the holds of an instance that died come back to the balance the next time the account is touched.
 */
const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n)
  return string.format('%d', n)
end
local function sweep(account, holds, expiry, now)
  local ids = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 512)
  for _, id in ipairs(ids) do
    local held = redis.call('HGET', holds, id)
    if held then
      redis.call('HDEL', holds, id)
      redis.call('HINCRBY', account, 'held', -tonumber(held))
      redis.call('HINCRBY', account, 'expired', 1)
    end
    redis.call('ZREM', expiry, id)
  end
end
local function available(account)
  local v = redis.call('HMGET', account, 'start', 'used', 'held')
  return tonumber(v[1] or 0) - tonumber(v[2] or 0) - tonumber(v[3] or 0)
end
-- a budget window's spend, and (rolling) when its oldest spend ages out: a calendar window keeps id and spent; a
-- rolling one (slice > 0) keeps a field s:<slice index> per slice, dropped once the span has passed over it
local function budget_spent(budget, id, slice, span, now)
  if slice > 0 then
    local from = math.floor((now - span) / slice)
    local all = redis.call('HGETALL', budget)
    local spent, oldest = 0, nil
    for i = 1, #all, 2 do
      local f = all[i]
      if string.sub(f, 1, 2) == 's:' then
        local idx = tonumber(string.sub(f, 3))
        if idx < from then redis.call('HDEL', budget, f)
        else
          spent = spent + tonumber(all[i + 1])
          if oldest == nil or idx < oldest then oldest = idx end
        end
      end
    end
    if oldest then return spent, (oldest + 1) * slice + span end
    return spent, now
  end
  local v = redis.call('HMGET', budget, 'id', 'spent')
  if v[1] == id then return tonumber(v[2] or 0), 0 end
  return 0, 0
end
-- a budget window (id '' : none): whether the account's holds and \`milli\` more would pass \`limit\`
local function budget_refuses(account, budget, id, limit, milli, slice, span, now)
  if id == '' then return false, 0, 0, 0 end
  local spent, ages = budget_spent(budget, id, tonumber(slice), tonumber(span), now)
  local held = tonumber(redis.call('HGET', account, 'held') or 0)
  return spent + held + milli > tonumber(limit), spent, held, ages
end
`;

/** KEYS account; ARGV starting thousandths. Creates the account unless it exists: 1 created, 0 existed. */
export const OPEN = script(
  'open',
  `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'start', ARGV[1], 'used', 0, 'held', 0, 'expired', 0)
return 1
`,
);

/**
 * KEYS account, holds, expiry, settled(hold), budget; ARGV hold id, thousandths, ttl ms, budget window id (''
 * for none), budget limit thousandths, rolling slice and span ms (0: a calendar window).
 * 1 held, 0 not enough available, -1 unknown account, -2 the hold id exists or was settled, {-5, spent, held,
 * when a rolling window's oldest spend ages out} the budget window refused it.
 */
export const RESERVE = script(
  'reserve',
  `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local now = now_ms()
sweep(KEYS[1], KEYS[2], KEYS[3], now)
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return -2 end
local milli = tonumber(ARGV[2])
if milli > available(KEYS[1]) then return 0 end
local over, spent, held, ages = budget_refuses(KEYS[1], KEYS[5], ARGV[4], ARGV[5], milli, ARGV[6], ARGV[7], now)
if over then return {-5, spent, held, ages} end
redis.call('HINCRBY', KEYS[1], 'held', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
return 1
`,
);

/**
 * KEYS account, holds, expiry, settled(hold), models, generation(id), provider-id(id), generations, the
 * account's limit leases (or any key of its slot), budget;
 * ARGV hold id, cost thousandths, model, settled ttl s, record JSON or '', provider id or '', record ttl s,
 * records kept, generation id, the concurrency slot to give back (or ''), budget window id (or ''), its start ms,
 * its soft limit thousandths, its reset ms, and for a rolling window its slice and span ms (0 otherwise).
 * Releases the hold, charges min(cost, what is available), adds the charge to the budget window's spend (never to
 * a window older than the one kept), remembers the result and writes the record, all at once. Answers
 * `charged,unpaid` (`,spent,crossed` with a budget window; the first answer again for a hold settled before), or
 * 'unknown'.
 */
export const SETTLE = script(
  'settle',
  `
if ARGV[10] and ARGV[10] ~= '' then redis.call('ZREM', KEYS[9], ARGV[10]) end
local done = redis.call('GET', KEYS[4])
if done then return done end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
local now = now_ms()
sweep(KEYS[1], KEYS[2], KEYS[3], now)
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'held', -tonumber(held))
end
local cost = tonumber(ARGV[2])
local charge = math.min(cost, math.max(0, available(KEYS[1])))
if charge > 0 then
  redis.call('HINCRBY', KEYS[1], 'used', int(charge))
  redis.call('HINCRBY', KEYS[5], ARGV[3], int(charge))
end
local result = int(charge) .. ',' .. int(cost - charge)
if ARGV[11] and ARGV[11] ~= '' and tonumber(ARGV[15]) > 0 then
  -- a rolling window: the charge goes in the slice of now
  local slice = tonumber(ARGV[15])
  local before = budget_spent(KEYS[10], ARGV[11], slice, tonumber(ARGV[16]), now)
  redis.call('HINCRBY', KEYS[10], 's:' .. int(math.floor(now / slice)), int(charge))
  redis.call('PEXPIRE', KEYS[10], tonumber(ARGV[16]) + 2 * slice)
  local soft = tonumber(ARGV[13])
  local crossed = 0
  if before < soft and before + charge >= soft then crossed = 1 end
  result = result .. ',' .. int(before + charge) .. ',' .. crossed
elseif ARGV[11] and ARGV[11] ~= '' then
  local v = redis.call('HMGET', KEYS[10], 'id', 'starts', 'spent')
  local before = 0
  if v[1] == ARGV[11] then before = tonumber(v[3] or 0) end
  if v[1] == ARGV[11] or not v[1] or tonumber(v[2] or 0) < tonumber(ARGV[12]) then
    redis.call('HSET', KEYS[10], 'id', ARGV[11], 'starts', ARGV[12], 'spent', int(before + charge))
    redis.call('PEXPIREAT', KEYS[10], tonumber(ARGV[14]) + 86400000)
  end
  local soft = tonumber(ARGV[13])
  local crossed = 0
  if before < soft and before + charge >= soft then crossed = 1 end
  result = result .. ',' .. int(before + charge) .. ',' .. crossed
end
redis.call('SET', KEYS[4], result, 'EX', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[6], 'record', ARGV[5], 'charged', int(charge), 'unpaid', int(cost - charge))
  redis.call('EXPIRE', KEYS[6], ARGV[7])
  if ARGV[6] ~= '' then redis.call('SET', KEYS[7], ARGV[9], 'EX', ARGV[7]) end
  redis.call('ZADD', KEYS[8], now, ARGV[9])
  local extra = redis.call('ZCARD', KEYS[8]) - tonumber(ARGV[8])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[8], 0, extra - 1) end
  redis.call('EXPIRE', KEYS[8], ARGV[7])
end
return result
`,
);

/** KEYS account, holds, expiry, models. Answers false for an unknown account, else {start, used, held, models…}. */
export const BALANCE = script(
  'balance',
  `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
sweep(KEYS[1], KEYS[2], KEYS[3], now_ms())
local v = redis.call('HMGET', KEYS[1], 'start', 'used', 'held')
return { v[1] or '0', v[2] or '0', v[3] or '0', redis.call('HGETALL', KEYS[4]) }
`,
);

/** KEYS holds-or-leases, expiry; ARGV ttl ms, ids… Moves the expiry of the ids that still exist; answers how many. */
export const RENEW_HOLDS = script(
  'renew-holds',
  `
local until_ms = now_ms() + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], 'XX', until_ms, ARGV[i])
    n = n + 1
  end
end
return n
`,
);

/** KEYS leases; ARGV max, lease id, ttl ms. 1 when a slot was taken, 0 when all `max` are in use. */
export const ACQUIRE = script(
  'acquire',
  `
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`,
);

/** KEYS leases; ARGV ttl ms, lease ids… Moves the expiry of the leases that still exist. */
export const RENEW_LEASES = script(
  'renew-leases',
  `
local until_ms = now_ms() + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', until_ms, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
`,
);

/** Token bucket and lease helpers of the scripts that take limits. */
const LIMITS = `
local function take_rate(bucket, cap, now)
  local v = redis.call('HMGET', bucket, 'tokens', 'at')
  local rate = cap / 60000
  local tokens = math.min(cap, (tonumber(v[1]) or cap) + math.max(0, now - (tonumber(v[2]) or now)) * rate)
  local wait = 0
  if tokens >= 1 then tokens = tokens - 1 else wait = math.max(1, math.ceil((1 - tokens) / rate)) end
  redis.call('HSET', bucket, 'tokens', string.format('%.6f', tokens), 'at', int(now))
  redis.call('PEXPIRE', bucket, 60000)
  return wait
end
-- counts a request against \`cap\` a minute (0: no limit): the wait when refused, and whether it was counted
local function count_rate(bucket, cap, now)
  if cap <= 0 then return 0, 0 end
  local wait = take_rate(bucket, cap, now)
  if wait > 0 then return wait, 0 end
  return 0, 1
end
-- what is left in the bucket (whole requests) and the ms until it is full: for the x-ratelimit-* headers
local function rate_left(bucket, cap)
  if cap <= 0 then return -1, 0 end
  local left = tonumber(redis.call('HGET', bucket, 'tokens')) or cap
  return math.floor(math.max(0, left)), math.ceil((cap - left) / (cap / 60000))
end
local function slots_full(leases, max, now)
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  return redis.call('ZCARD', leases) >= max
end
`;

/**
 * KEYS bucket; ARGV requests per minute. A token bucket holding that many requests, refilled continuously:
 * answers 0 when the request may go, else the milliseconds until it could.
 */
export const HIT = script(
  'hit',
  `${LIMITS}
local cap = tonumber(ARGV[1])
local wait = take_rate(KEYS[1], cap, now_ms())
local left = tonumber(redis.call('HGET', KEYS[1], 'tokens')) or cap
return {wait, math.floor(math.max(0, left)), math.ceil((cap - left) / (cap / 60000))}`,
);

/** A token bucket that may be overdrawn (its level below zero), refilled continuously: the level now. */
const TOKEN_BUCKET = `
local function level_of(bucket, cap, now)
  local v = redis.call('HMGET', bucket, 'tokens', 'at')
  return math.min(cap, (tonumber(v[1]) or cap) + math.max(0, now - (tonumber(v[2]) or now)) * cap / 60000)
end
local function store_level(bucket, cap, level, now)
  redis.call('HSET', bucket, 'tokens', string.format('%.6f', level), 'at', int(now))
  -- kept until it has refilled: an overdrawn bucket longer than a minute
  redis.call('PEXPIRE', bucket, math.ceil((cap - level) / (cap / 60000)) + 1000)
end
`;

/**
 * KEYS token bucket; ARGV tokens per minute, tokens. Takes the tokens while the bucket is above zero (it may be
 * overdrawn: the settlement gives back or takes the difference). Answers {wait ms (0: taken), remaining, reset ms}.
 */
export const TAKE_TOKENS = script(
  'take-tokens',
  `${TOKEN_BUCKET}
local cap = tonumber(ARGV[1])
local now = now_ms()
local level = level_of(KEYS[1], cap, now)
local wait = 0
if level <= 0 then wait = math.max(1, math.ceil((1 - level) / (cap / 60000))) else level = level - tonumber(ARGV[2]) end
store_level(KEYS[1], cap, level, now)
return {wait, math.floor(math.max(0, level)), math.ceil((cap - level) / (cap / 60000))}`,
);

/** KEYS token bucket; ARGV tokens per minute, tokens to give back (negative: to take). Never above the cap. */
export const RETURN_TOKENS = script(
  'return-tokens',
  `${TOKEN_BUCKET}
local cap = tonumber(ARGV[1])
local now = now_ms()
store_level(KEYS[1], cap, math.min(cap, level_of(KEYS[1], cap, now) + tonumber(ARGV[2])), now)
return 1`,
);


/**
 * The whole admission of a generation in one step, when its limit key is its account:
 * KEYS account, holds, expiry, settled(hold), bucket, leases, budget; ARGV hold id, thousandths, ttl ms, requests
 * per minute (0: none or counted already), slots (0: none), budget window id ('' for none), budget limit
 * thousandths, rolling slice and span ms (0: a calendar window). {-5, counted, spent, held, ages out at}: the
 * budget window refused it.
 * Counts the request against the rate, checks the credits are there, then a slot (a balance that cannot pay is
 * 402 whatever the slots: the app's retry with a lower cap stays a 402 when nothing fits), holds the credits and
 * takes the slot (the hold id).
 * Answers {1, counted, requests left (-1: no rate counted), ms until the bucket is full} held, {0, counted} not
 * enough available (no slot taken), {-1} unknown account, {-2} the hold id exists or was settled, {-3, ms} the
 * rate refused (again in ms), {-4, counted} every slot in use.
 */
export const ADMIT = script(
  'admit',
  `${LIMITS}
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local now = now_ms()
sweep(KEYS[1], KEYS[2], KEYS[3], now)
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return {-2, 0} end
local wait, counted = count_rate(KEYS[5], tonumber(ARGV[4]), now)
if wait > 0 then return {-3, wait} end
local milli = tonumber(ARGV[2])
if milli > available(KEYS[1]) then return {0, counted} end
local over, spent, held, ages = budget_refuses(KEYS[1], KEYS[7], ARGV[6], ARGV[7], milli, ARGV[8], ARGV[9], now)
if over then return {-5, counted, spent, held, ages} end
local max = tonumber(ARGV[5])
if max > 0 and slots_full(KEYS[6], max, now) then return {-4, counted} end
redis.call('HINCRBY', KEYS[1], 'held', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
if max > 0 then
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[6], ARGV[3])
end
local left, reset = rate_left(KEYS[5], tonumber(ARGV[4]))
return {1, counted, left, reset}
`,
);

/**
 * The limits of a generation whose limit key is not its account (another hash slot), before its hold:
 * KEYS bucket, leases; ARGV requests per minute (0: none or counted already), slots (0: none), slot id, ttl ms.
 * Answers {1, counted} taken (the slot too when slots > 0), {-3, ms} the rate refused, {-4, counted} every slot in use.
 */
export const TAKE_LIMITS = script(
  'take-limits',
  `${LIMITS}
local now = now_ms()
local wait, counted = count_rate(KEYS[1], tonumber(ARGV[1]), now)
if wait > 0 then return {-3, wait} end
local max = tonumber(ARGV[2])
if max > 0 then
  if slots_full(KEYS[2], max, now) then return {-4, counted} end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return {1, counted}
`,
);
