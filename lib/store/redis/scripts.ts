/**
 * The Lua scripts of the Redis store. Each touches the keys of one hash
 * slot only (a window's keys, or one shard's), so it runs on one master of
 * a cluster, atomically. Scripts are sent by their SHA-1 digest
 * (`EVALSHA`), and in full once per node that does not know them yet.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** A Lua script and its SHA-1 digest. */
export interface Script {
  source: string;
  sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash("sha1").update(source).digest("hex") };
}

/**
 * Adds ids to a set unless its closing marker exists: a shard's ids and its
 * `closed` key, or the one-slot set of earlier versions and the window's
 * report. KEYS: ids, marker. ARGV: ttl ms, id... Returns -1, or 1/0 per id.
 */
export const RECORD_IDS = script(`
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local added = {}
for i = 2, #ARGV do added[#added + 1] = redis.call('SADD', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return added`);

/**
 * Adds ids to a shard whatever its marker: the one-slot ids of a window
 * moving into its shards, before any shard closes. KEYS: ids. ARGV: ttl ms,
 * id...
 */
export const ADD_IDS = script(`
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`);

/**
 * A window's shard count: the one its first writer set, else `ARGV[1]`,
 * set now; -1 when the window is claimed and has none (no id can enter it).
 * KEYS: shards, report. ARGV: shards, ttl ms.
 */
export const LAYOUT = script(`
local shards = redis.call('GET', KEYS[1])
if shards then return tonumber(shards) end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return tonumber(ARGV[1])`);

/**
 * Claims a window's report. Returns `{outcome, shards, one-slot ids}`: the
 * outcome `ok`, `reported` or `claimed`; the window's shard count (0 when
 * no writer of this version set one); 1 when the window has ids in the
 * one-slot set of earlier versions. KEYS: report, shards, one-slot ids.
 * ARGV: owner, now, lease ms, ttl ms.
 */
export const CLAIM = script(`
local current = redis.call('GET', KEYS[1])
if current then
  local record = cjson.decode(current)
  if record.state == 'reported' then return {'reported'} end
  if tonumber(ARGV[2]) - record.claimedAt < tonumber(ARGV[3]) then return {'claimed'} end
end
redis.call('SET', KEYS[1], cjson.encode({state = 'claimed', owner = ARGV[1],
  claimedAt = tonumber(ARGV[2])}), 'PX', ARGV[4])
return {'ok', tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('EXISTS', KEYS[3])}`);

/**
 * Gives up a claim that could not close the window's shards: its lease
 * ends at once, so the next claim, this owner's or another's, takes it
 * over and closes the rest. The record stays, keeping the window closed to
 * new URLs. KEYS: report. ARGV: owner. Returns 1 when given up.
 */
export const RELEASE = script(`
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local record = cjson.decode(current)
if record.owner ~= ARGV[1] or record.state ~= 'claimed' then return 0 end
record.claimedAt = 0
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
return 1`);

/**
 * Closes a shard: no id enters it after this. KEYS: ids, closed. ARGV: ttl
 * ms. Returns the shard's ids, final from now on.
 */
export const CLOSE_SHARD = script(`
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return redis.call('SCARD', KEYS[1])`);

/**
 * Completes a claimed report and puts it in the outbox. KEYS: report,
 * one-slot ids, outbox. ARGV: owner, unique ids, ttl ms, then pairs of sink
 * name and outbox entry JSON. Returns `ok`, or `lost` when the claim is not
 * the owner's.
 */
export const COMPLETE = script(`
local current = redis.call('GET', KEYS[1])
if not current then return 'lost' end
local record = cjson.decode(current)
if record.owner ~= ARGV[1] or record.state ~= 'claimed' then return 'lost' end
record.state = 'reported'
record.uniqueIds = tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(record), 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 'ok'`);

/**
 * Records a webhook URL of a window. KEYS: urls, report. ARGV: url, max,
 * ttl ms. Returns `known`, `closed`, `full` or `recorded`.
 */
export const RECORD_URL = script(`
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 'known' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'closed' end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 'full' end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'recorded'`);

/** Marks a window's report done with a URL. KEYS: urls-done. ARGV: url, ttl ms. */
export const MARK_URL_DONE = script(`
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`);

/**
 * Removes an outbox entry if it is unchanged and records its outcome.
 * KEYS: outbox, delivery. ARGV: sink, expected JSON, delivery record JSON,
 * ttl ms. Returns -1 when the entry changed, else the entries left.
 */
export const FINISH_OUTBOX = script(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return redis.call('HLEN', KEYS[1])`);

/**
 * Replaces an outbox entry if it is unchanged. KEYS: outbox. ARGV: sink,
 * expected JSON, new JSON. Returns 1 when replaced.
 */
export const SWAP_OUTBOX = script(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1`);
