"""The Lua scripts the Redis store runs: each one atomic on the server, so two
gateway instances never both take the last unit of a counter."""

from __future__ import annotations

#: Where a take with an id leaves what it did (to be undone), or finds that its gateway
#: gave up on it: ``gatewayd:take:done:ID`` / ``gatewayd:take:dead:ID``, two minutes.
TAKE_MEMO_MS = 120_000

#: KEYS: one per take. ARGV[1] = now, ARGV[2] = "take", "take:ID" or "peek", then per take four
#: values: kind ("w" window / "l" lease), limit ("" = none), amount or lease id,
#: window or lease ttl (seconds). Returns {ok, refused index (0 = none), then per take:
#: used, reset_at, start}, numbers as strings (Lua would truncate them to integers).
TAKE = r"""
local now = tonumber(ARGV[1])
local peek = ARGV[2] == 'peek'
-- A take with an id is one its gateway may give up on (a timeout): see UNDO_TAKE.
local tid = string.match(ARGV[2], '^take:(.+)$')
if tid and redis.call('EXISTS', 'gatewayd:take:dead:' .. tid) == 1 then
  return {0, 0}
end
local ok = 1
local refused = 0
local state = {}
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 4
  local kind, limit, arg, span = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], tonumber(ARGV[b + 4])
  local key = KEYS[i]
  local start, used = 0, 0
  if kind == 'w' then
    start = tonumber(redis.call('HGET', key, 's'))
    used = tonumber(redis.call('HGET', key, 'u')) or 0
    if start == nil or now >= start + span then
      start = now
      used = 0
    end
  else
    if not peek then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    end
    used = redis.call('ZCOUNT', key, '(' .. now, '+inf')
  end
  state[i] = {kind, start, used, arg, span}
  if ok == 1 and limit ~= nil and used >= limit then
    ok = 0
    refused = i
  end
end
local out = {ok, refused}
for i = 1, #KEYS do
  local kind, start, used, arg, span = unpack(state[i])
  local key = KEYS[i]
  local reset = 0
  if kind == 'w' then
    reset = start + span
    if ok == 1 and not peek then
      used = used + tonumber(arg)
      redis.call('HSET', key, 's', tostring(start), 'u', tostring(used))
      redis.call('PEXPIRE', key, math.max(1, math.ceil((start + span - now) * 1000)))
    end
  elseif ok == 1 and not peek and redis.call('EXISTS', key .. ':dead:' .. arg) == 0 then
    -- (A lease its gateway gave up on, see ABANDON, is not taken.)
    redis.call('ZADD', key, now + span, arg)
    used = used + 1
    -- The set lives as long as its longest lease (leases may differ: cooldowns).
    local want = math.ceil(span * 1000) + 1000
    if redis.call('PTTL', key) < want then
      redis.call('PEXPIRE', key, want)
    end
  end
  out[#out + 1] = tostring(used)
  out[#out + 1] = tostring(reset)
  out[#out + 1] = tostring(start)
end
if tid and ok == 1 and not peek then
  local undo = {}
  for i = 1, #KEYS do
    local kind, start, used, arg, span = unpack(state[i])
    if kind == 'w' then
      undo[i] = {'w', KEYS[i], tostring(start), arg}
    else
      undo[i] = {'l', KEYS[i], arg}
    end
  end
  redis.call('SET', 'gatewayd:take:done:' .. tid, cjson.encode(undo), 'PX', 120000)  -- TAKE_MEMO_MS
end
return out
"""

#: ARGV: take ids its gateway gave up on (the answer was lost), then the memo's
#: milliseconds. A take that ran is undone (its window amounts taken back if the
#: window is still the same, its leases freed); one that has not run yet is marked,
#: so that it does nothing when it reaches the server. Either order ends the same.
UNDO_TAKE = r"""
local ms = ARGV[#ARGV]
for t = 1, #ARGV - 1 do
  local tid = ARGV[t]
  local done = redis.call('GET', 'gatewayd:take:done:' .. tid)
  if done then
    for _, u in ipairs(cjson.decode(done)) do
      if u[1] == 'w' then
        local s = redis.call('HGET', u[2], 's')
        if s and tonumber(s) == tonumber(u[3]) then
          local v = (tonumber(redis.call('HGET', u[2], 'u')) or 0) - tonumber(u[4])
          if v < 0 then v = 0 end
          redis.call('HSET', u[2], 'u', tostring(v))
        end
      else
        redis.call('ZREM', u[2], u[3])
      end
    end
    redis.call('DEL', 'gatewayd:take:done:' .. tid)
  else
    redis.call('SET', 'gatewayd:take:dead:' .. tid, '1', 'PX', ms)
  end
end
return 0
"""

#: KEYS: windows, then leases. ARGV[1] = number of windows, then (start, delta) per
#: window, then the lease id per lease. SETTLE for each window, ZREM for each lease.
SETTLE_MANY = r"""
local nw = tonumber(ARGV[1])
for i = 1, nw do
  local key = KEYS[i]
  local s = redis.call('HGET', key, 's')
  if s and tonumber(s) == tonumber(ARGV[2 * i]) then
    local u = (tonumber(redis.call('HGET', key, 'u')) or 0) + tonumber(ARGV[2 * i + 1])
    if u < 0 then u = 0 end
    redis.call('HSET', key, 'u', tostring(u))
  end
end
for i = nw + 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[nw + 1 + i])
end
return 0
"""

#: KEYS: lease sets; ARGV: (lease id, milliseconds) per key. Frees each lease and
#: leaves a tombstone for that long, so that a TAKE of it that reaches the server later
#: (its gateway timed out waiting, and gave up) does not take it: in either order, the
#: slot ends up free.
ABANDON = r"""
for i = 1, #KEYS do
  local lease = ARGV[2 * i - 1]
  redis.call('ZREM', KEYS[i], lease)
  redis.call('SET', KEYS[i] .. ':dead:' .. lease, '1', 'PX', ARGV[2 * i])
end
return 0
"""

#: KEYS[1] = leases; ARGV[1] = now. The live leases and their expiry, flat.
MEMBERS = r"""
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
"""

#: KEYS[1] = window; ARGV = start, delta. Applies only to the window that opened at
#: ``start`` (an expired window is gone, so it is never reopened).
SETTLE = r"""
local s = redis.call('HGET', KEYS[1], 's')
if s and tonumber(s) == tonumber(ARGV[1]) then
  local u = (tonumber(redis.call('HGET', KEYS[1], 'u')) or 0) + tonumber(ARGV[2])
  if u < 0 then u = 0 end
  redis.call('HSET', KEYS[1], 'u', tostring(u))
end
return 0
"""
