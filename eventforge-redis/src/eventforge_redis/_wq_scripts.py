"""Lua scripts of the Redis Streams work queue; each runs atomically on the server.

Keys, for a queue stream ``S``: ``S`` (the items), ``S:dead`` (dead letters), ``S:delayed``
(a sorted set of entry ids by ready time, server clock) and ``S:delayed:items`` (their data).
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["ACK_MANY", "CLAIM", "DELAY", "PROMOTE", "SETTLE", "TOUCH", "Script"]


class Script:
    """A Lua script called by SHA, loaded again when the server lost it (a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: Any, *args: Any) -> Any:
        try:
            return client.evalsha(self.sha, 0, *args)
        except Exception as exc:
            if type(exc).__name__ != "NoScriptError":
                raise
            return client.eval(self.source, 0, *args)


SETTLE = r"""
-- ARGV: mode (ack|nack|dead), stream, group, entry id, expected delivery count, ...
local mode, stream, group, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expected = tonumber(ARGV[5])
local p = redis.call('XPENDING', stream, group, id, id, 1)
if #p == 0 or tonumber(p[1][4]) ~= expected then
  return 0  -- already settled, or taken over by another consumer: a stale settle is ignored
end
if mode == 'nack' then
  local data, attempts, delay, seen = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
  if delay <= 0 then
    redis.call('XADD', stream, '*', 'data', data, 'attempts', attempts)
  else
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('HSET', stream .. ':delayed:items', 'd:' .. id, data, 'a:' .. id, attempts)
    redis.call('ZADD', stream .. ':delayed', now + delay, id)
  end
  if seen ~= '' then redis.call('DEL', seen) end
elseif mode == 'dead' then
  redis.call('XADD', stream .. ':dead', '*', 'data', ARGV[6], 'attempts', ARGV[7],
             'reason', ARGV[8], 'failed_at', ARGV[9])
end
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
return 1
"""

DELAY = r"""
-- ARGV: stream, delayed id, data, delay ms. Keeps a new item until its time (server clock),
-- then PROMOTE moves it into the stream as a first attempt.
local stream, id = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', stream .. ':delayed:items', 'd:' .. id, ARGV[3], 'a:' .. id, '0')
redis.call('ZADD', stream .. ':delayed', now + tonumber(ARGV[4]), id)
return 1
"""

PROMOTE = r"""
-- ARGV: stream, limit. Moves due delayed items back into the stream.
-- Returns {moved, ms until the next one is due or -1}.
local stream, limit = ARGV[1], tonumber(ARGV[2])
local zkey, hkey = stream .. ':delayed', stream .. ':delayed:items'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, limit)
for i = 1, #ids do
  local id = ids[i]
  local data = redis.call('HGET', hkey, 'd:' .. id)
  if data then
    local attempts = redis.call('HGET', hkey, 'a:' .. id) or '0'
    redis.call('XADD', stream, '*', 'data', data, 'attempts', attempts)
  end
  redis.call('HDEL', hkey, 'd:' .. id, 'a:' .. id)
  redis.call('ZREM', zkey, id)
end
local nxt = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
local wait = -1
if #nxt > 0 then wait = math.max(0, tonumber(nxt[2]) - now) end
return {#ids, wait}
"""

CLAIM = r"""
-- ARGV: stream, group, consumer, min idle ms, count.
-- Takes over entries idle for min idle ms (their consumer died) and returns
-- {{id, fields, delivery count}...}, number of pending entries whose data was trimmed away.
local stream, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local r = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], '0-0', 'COUNT', ARGV[5])
local out = {}
local trimmed = false
for i = 1, #r[2] do
  local e = r[2][i]
  if e then
    local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
    local n = 1
    if #p > 0 then n = p[1][4] end
    out[#out + 1] = {e[1], e[2], n}
  else
    trimmed = true
  end
end
local deleted = 0
if r[3] then
  -- Redis >= 7: ids of pending entries whose data was trimmed, already removed from the PEL.
  deleted = #r[3]
elseif trimmed then
  -- Redis 6.2: such an entry comes back as nil and stays pending; find it among this
  -- consumer's pending entries and acknowledge it, so it is reported once, not forever.
  local pend = redis.call('XPENDING', stream, group, '-', '+', ARGV[5], consumer)
  for j = 1, #pend do
    local id = pend[j][1]
    if #redis.call('XRANGE', stream, id, id) == 0 then
      redis.call('XACK', stream, group, id)
      deleted = deleted + 1
    end
  end
end
return {out, deleted}
"""

ACK_MANY = r"""
-- ARGV: stream, group, then pairs of (entry id, expected delivery count).
-- Acknowledges and deletes each entry this delivery still owns; returns how many.
local stream, group = ARGV[1], ARGV[2]
local done = 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if #p > 0 and tonumber(p[1][4]) == tonumber(ARGV[i + 1]) then
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    done = done + 1
  end
end
return done
"""

TOUCH = r"""
-- ARGV: stream, group, consumer, entry id, expected delivery count.
-- Resets the entry's idle time, only while this delivery still owns it.
local stream, group, consumer, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local p = redis.call('XPENDING', stream, group, id, id, 1)
if #p == 0 or p[1][2] ~= consumer or tonumber(p[1][4]) ~= tonumber(ARGV[5]) then
  return 0
end
redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
return 1
"""
