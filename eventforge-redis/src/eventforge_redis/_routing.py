"""How topics map onto Redis: channels, glob patterns, and the group registry.

A published message goes to every plain subscriber through ``PUBLISH`` and to one member of
every competing-consumer group whose pattern matches through that group's stream. Which groups
exist is kept *in Redis* (the group registry) and consulted *by Redis*: publishing runs a Lua
script (:data:`ROUTE_BATCH_SCRIPT`) that publishes each message and appends it to the matching
group streams, atomically on the server. So a group is routed to from the moment
``subscribe(..., group=)`` returns, by every publisher, without any client-side cache that
could be stale.

One script call routes a whole batch: ``EVALSHA <sha> 0 prefix maxlen topic1 data1 topic2
data2 ...``. It reads the wildcard registry once per call and looks up each distinct topic's
group streams once per call (the registry cannot change while a script runs), then publishes
the messages in order. It replies with a flat array, two entries per message in order:
``receivers, groups``, what ``PUBLISH`` returned (pub/sub connections reached) and how many
group streams the message was appended to; ``send_counted`` adds them. Each message's commands
run under ``redis.pcall``, so a message Redis refuses (an ACL ``NOPERM`` on its channel, say)
gets its error in place of ``receivers`` (an error element of the array reply) while the other
messages of the call are published; a refused ``PUBLISH`` skips that message's group streams,
and a refused ``XADD`` stops appending it to further streams.
Wildcard group patterns are matched in time proportional to pattern segments times topic
segments, whatever the pattern.

Registry keys (``<prefix>`` defaults to ``eventforge``):

* ``<prefix>:groups:exact:<topic>``: a set of group streams for an exact topic (O(1) lookup).
* ``<prefix>:groups:wild``: a set of ``"<pattern> <stream>"`` for wildcard group patterns;
  the script matches them with the same rules as :func:`eventforge.topics.topic_matches`.
"""

from __future__ import annotations

__all__ = [
    "ROUTE_BATCH_SCRIPT",
    "glob_for",
    "group_registry_entry",
    "group_stream_key",
]

ROUTE_BATCH_SCRIPT = r"""
local prefix, maxlen = ARGV[1], ARGV[2]
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
-- The wildcard registry, read and parsed once per call.
local wild = {}
local entries = redis.call('SMEMBERS', prefix .. ':groups:wild')
for i = 1, #entries do
  local entry = entries[i]
  local sp = string.find(entry, ' ', 1, true)
  if sp then
    wild[#wild + 1] = {split(string.sub(entry, 1, sp - 1)), string.sub(entry, sp + 1)}
  end
end
-- topic -> the group streams it is appended to (or the error reading them), once per topic.
local routes = {}
local out = {}
for i = 3, #ARGV - 1, 2 do
  local topic, data = ARGV[i], ARGV[i + 1]
  local streams = routes[topic]
  if streams == nil then
    streams = redis.pcall('SMEMBERS', prefix .. ':groups:exact:' .. topic)
    if streams.err == nil and #wild > 0 then
      local segs = split(topic)
      for j = 1, #wild do
        if match(wild[j][1], segs) then streams[#streams + 1] = wild[j][2] end
      end
    end
    routes[topic] = streams
  end
  -- pcall: a refused command (an ACL NOPERM, say) fails this message only.
  local result = redis.pcall('PUBLISH', topic, data)
  local routed = 0
  if type(result) ~= 'table' then
    if streams.err ~= nil then
      result = streams
    else
      for j = 1, #streams do
        local id = redis.pcall('XADD', streams[j], 'MAXLEN', '~', maxlen, '*', 'data', data)
        if type(id) == 'table' and id.err ~= nil then
          result = id
          break
        end
        routed = routed + 1
      end
    end
  end
  out[#out + 1] = result
  out[#out + 1] = routed
end
return out
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
