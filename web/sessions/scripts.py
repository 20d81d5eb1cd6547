"""The Lua scripts of the session store (store.py): each runs in one step on one user's keys.

Field names are those of store.py: c (created), s (seen, seconds after c), r (remembered).
"""

# Read a session and, when asked, slide its idle window without passing the absolute
# deadline; rewrite last-seen at most once a minute. One round trip either way. The store's
# timeouts are written into the script (@IDLE@ ...): every page view sends two arguments, not
# seven, and redis-py's encoding of each is a measurable part of a page's CPU.
LOAD = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local created, seen, idle, absolute = 0, 0, @IDLE@, @ABSOLUTE@
for i = 1, #h, 2 do
  if h[i] == 'c' then created = tonumber(h[i + 1])
  elseif h[i] == 's' then seen = tonumber(h[i + 1])
  elseif h[i] == 'r' then idle, absolute = @REMEMBER_IDLE@, @REMEMBER_ABSOLUTE@ end
end
local now = tonumber(ARGV[1])
local left = created * 1000 + absolute - now
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
local ttl
if ARGV[2] == '1' then
  ttl = math.min(idle, left)
  -- An absolute time, not a relative one: the request's own latency must not stretch the deadline.
  redis.call('PEXPIREAT', KEYS[1], now + ttl)
  if now - (created + seen) * 1000 >= @SEEN_EVERY@ * 1000 then
    redis.call('HSET', KEYS[1], 's', math.floor(now / 1000) - created)
  end
else
  ttl = redis.call('PTTL', KEYS[1])
end
return {ttl, h}
"""

# Write a new anonymous session and its expiry together, so no session lives without a TTL.
CREATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"""

# Sign in: only under the epoch read before the password was checked; then index the session
# (dropping entries past their deadline, evicting the oldest beyond the cap, never the newcomer)
# and write it. The index expires with the last session it can hold. Never while the user's
# sign-ins are held (KEYS[4], a password reset under way). With KEYS[5] (a signed-in session
# taking a new id), only while that session is alive, and it goes in the same step: a session
# revoked mid-request must not come back under its new id.
CREATE_FOR_USER = """
if tonumber(redis.call('GET', KEYS[2]) or 0) ~= tonumber(ARGV[5]) then return false end
if redis.call('EXISTS', KEYS[4]) == 1 then return false end
if KEYS[5] then
  if redis.call('DEL', KEYS[5]) == 0 then return false end
  redis.call('ZREM', KEYS[1], string.sub(KEYS[5], 3))  -- 's:' .. digest
end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if extra > 0 then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra)) do
    if member ~= ARGV[2] and extra > 0 then
      redis.call('ZREM', KEYS[1], member)
      redis.call('DEL', 's:' .. member)
      extra = extra - 1
    end
  end
end
local ttl = math.ceil((tonumber(ARGV[3]) - now) * 1000)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('HSET', KEYS[3], unpack(ARGV, 7))
redis.call('PEXPIREAT', KEYS[3], ARGV[6])
return 1
"""

# Change only the fields this request changed, and only while the session exists: a
# session revoked or expired mid-request must stay dead, not come back without a TTL.
UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, 1 + 2 * n)) end
if #ARGV > 1 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 2 + 2 * n)) end
return 1
"""

# End sessions of one user: those named, or (with no names) all but ARGV[1]; optionally bump
# the epoch first, in the same step, so no sign-in in flight can add one after the sweep. With
# ARGV[4] = 1 the index and the credential version (KEYS[3]) go too (the account is deleted).
# Returns the epoch and the digests of the sessions that were alive.
END = """
local epoch = tonumber(redis.call('GET', KEYS[2]) or 0)
if ARGV[2] == '1' then
  epoch = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
local targets = {}
if #ARGV > 4 then
  for i = 5, #ARGV do targets[#targets + 1] = ARGV[i] end
else
  targets = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local ended = {}
for _, member in ipairs(targets) do
  if member ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], member)
    if redis.call('DEL', 's:' .. member) == 1 then ended[#ended + 1] = member end
    redis.call('DEL', 't:p:' .. member)  -- its password-check counter (auth/throttle.py)
  end
end
if ARGV[4] == '1' then redis.call('DEL', KEYS[1], KEYS[3]) end
return {epoch, ended}
"""

# Read a field and delete it, in one step: a one-time value is used once.
TAKE = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then redis.call('HDEL', KEYS[1], ARGV[1]) end
return value
"""

BUMP = """
local epoch = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return epoch
"""

# A credential change (password, reset, address) claims the credential version it read: only if
# it is still ARGV[2], the epoch still ARGV[3] (unless empty) and, with KEYS[3], while that
# session (the one asking) is alive. Then the version moves on (unless ARGV[4] is 0), voiding
# links and changes that read it, and so does the epoch (voiding sign-ins in flight); returns
# the new epoch, or false. Of two changes racing, one goes through.
CLAIM = """
if tonumber(redis.call('GET', KEYS[1]) or 0) ~= tonumber(ARGV[2]) then return false end
if ARGV[3] ~= '' and tonumber(redis.call('GET', KEYS[2]) or 0) ~= tonumber(ARGV[3]) then return false end
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then return false end
if ARGV[4] == '1' then
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return epoch
"""

# Every live session of a user, pruning index entries whose session is gone.
LIST = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = 's:' .. member
  local ttl = redis.call('PTTL', key)
  if ttl > 0 then
    out[#out + 1] = {member, ttl, redis.call('HGETALL', key)}
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
"""

# Set one field (or with an empty value, delete it) in every live session of a user: what
# sessions keep about the user (the name, the unverified mark) changes everywhere at once.
SET_ALL = """
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = 's:' .. member
  if redis.call('EXISTS', key) == 1 then
    if ARGV[2] == '' then redis.call('HDEL', key, ARGV[1]) else redis.call('HSET', key, ARGV[1], ARGV[2]) end
  end
end
return 1
"""
