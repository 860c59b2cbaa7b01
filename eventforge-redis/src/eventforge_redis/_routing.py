"""How topics map onto Redis: channels, glob patterns, and the group registry.

A published message goes to every plain subscriber through ``PUBLISH`` and to one member of
every competing-consumer group whose pattern matches through that group's stream. Which groups
exist is kept *in Redis* (the group registry) and consulted *by Redis*: every publish runs one
Lua script (:data:`ROUTE_SCRIPT`) that publishes and appends to the matching group streams in
one atomic step. So a group is routed to from the moment ``subscribe(..., group=)`` returns, by
every publisher, without any client-side cache that could be stale.

The script replies ``[receivers, groups]``: what ``PUBLISH`` returned (pub/sub connections
reached) and how many group streams the message was appended to; ``send_counted`` adds them.
Wildcard group patterns are matched in time proportional to pattern segments times topic
segments, whatever the pattern.

Registry keys (``<prefix>`` defaults to ``eventforge``):

* ``<prefix>:groups:exact:<topic>``: a set of group streams for an exact topic (O(1) lookup).
* ``<prefix>:groups:wild``: a set of ``"<pattern> <stream>"`` for wildcard group patterns;
  the script matches them with the same rules as :func:`eventforge.topics.topic_matches`.
"""

from __future__ import annotations

__all__ = [
    "ROUTE_SCRIPT",
    "glob_for",
    "group_registry_entry",
    "group_stream_key",
]

ROUTE_SCRIPT = r"""
local topic, data, prefix, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local receivers = redis.call('PUBLISH', topic, data)
local routed = 0
local exact = redis.call('SMEMBERS', prefix .. ':groups:exact:' .. topic)
for i = 1, #exact do
  redis.call('XADD', exact[i], 'MAXLEN', '~', maxlen, '*', 'data', data)
  routed = routed + 1
end
local wild = redis.call('SMEMBERS', prefix .. ':groups:wild')
if #wild > 0 then
  local function split(s)
    local out = {}
    for seg in string.gmatch(s, '[^.]+') do out[#out + 1] = seg end
    return out
  end
  -- Which counts of topic segments the pattern prefix seen so far can consume (an NFA
  -- simulation, as eventforge.topics.topic_matches): O(#pattern * #topic) for any pattern,
  -- so several '**' cannot make a long topic backtrack exponentially.
  local function match(p, t)
    local n = #t
    local cur = {[0] = true}
    for i = 1, #p do
      local seg = p[i]
      local nxt = {}
      local any = false
      if seg == '**' then
        local lo = 0
        while not cur[lo] do lo = lo + 1 end
        for j = lo, n do nxt[j] = true end
        any = true
      else
        for j = 0, n - 1 do
          if cur[j] and (seg == '*' or t[j + 1] == seg) then
            nxt[j + 1] = true
            any = true
          end
        end
      end
      if not any then return false end
      cur = nxt
    end
    return cur[n] == true
  end
  local segs = split(topic)
  for i = 1, #wild do
    local entry = wild[i]
    local sp = string.find(entry, ' ', 1, true)
    if sp and match(split(string.sub(entry, 1, sp - 1)), segs) then
      redis.call('XADD', string.sub(entry, sp + 1), 'MAXLEN', '~', maxlen, '*', 'data', data)
      routed = routed + 1
    end
  end
end
return {receivers, routed}
"""


def glob_for(pattern: str) -> str | None:
    """The Redis channel glob to ``PSUBSCRIBE`` for ``pattern``; ``None`` for an exact topic.

    Redis's ``*`` also matches dots, so the glob may be broader than the pattern; the reader
    filters every message with :func:`eventforge.topics.topic_matches`. ``**`` may match zero
    segments (``a.**`` matches ``a``), which no dotted glob expresses, so such patterns
    subscribe to the literal prefix followed by ``*``.
    """
    if "*" not in pattern:
        return None
    segments = pattern.split(".")
    if "**" in segments:
        literal: list[str] = []
        for segment in segments:
            if segment in ("*", "**"):
                break
            literal.append(segment)
        return ".".join(literal) + "*" if literal else "*"
    return pattern


def group_stream_key(prefix: str, group: str, pattern: str) -> str:
    """The stream that carries the messages of ``group`` subscribed to ``pattern``."""
    return f"{prefix}:group:{group}:{pattern}"


def group_registry_entry(prefix: str, pattern: str, stream: str) -> tuple[str, str]:
    """``(set key, member)`` that registers ``stream`` for ``pattern`` in the group registry."""
    if "*" in pattern:
        return f"{prefix}:groups:wild", f"{pattern} {stream}"
    return f"{prefix}:groups:exact:{pattern}", stream
