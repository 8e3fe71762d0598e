// Shared by the k6 scenarios in loadtest/: where the gateway and the upstreams are (passed
// in by env: the scripts that start them choose their ports at run time), the
// constant-arrival-rate scenario most scenarios run, and small readers of answers.
import http from 'k6/http';
import { check } from 'k6';

// Env var `name`, which the script that starts the gateway sets.
export function requiredEnv(name) {
  const value = __ENV[name];
  if (!value) {
    throw new Error(`${name} is not set (loadtest/run.sh sets it; by hand, point it at the gateway)`);
  }
  return value;
}

// The URL in env var `name` (BASE_URL, ADMIN_URL), without a trailing slash.
export function envUrl(name) {
  return requiredEnv(name).replace(/\/+$/, '');
}

// The address of the upstream target the config names {upstream}, {upstream2}, ...
// (index 0, 1, ...), from TARGETS as loadtest/run.sh sets it; env var `name` overrides it.
export function target(index, name) {
  const address = __ENV[name] || (__ENV.TARGETS || '').split(',')[index];
  if (!address) {
    throw new Error(`${name} is not set, and TARGETS has no address ${index} (loadtest/run.sh sets it)`);
  }
  return address;
}

// The summary's trend columns: p99 is what the scenarios judge.
export const SUMMARY_TREND_STATS = ['avg', 'med', 'p(90)', 'p(99)', 'max'];

// Seconds in a k6 duration such as `500ms`, `30s` or `10m`.
export function seconds(duration) {
  const match = /^(\d+)(ms|s|m)$/.exec(duration);
  if (!match) throw new Error(`not a duration: ${duration}`);
  const n = parseInt(match[1], 10);
  return match[2] === 'ms' ? n / 1000 : match[2] === 'm' ? n * 60 : n;
}

// A scenario of `rate` iterations per second for `duration`, with `more` fields (exec,
// tags, startTime) added.
export function constantRate(rate, duration, preAllocatedVUs, maxVUs, more = {}) {
  return Object.assign(
    { executor: 'constant-arrival-rate', rate, timeUnit: '1s', duration, preAllocatedVUs, maxVUs },
    more,
  );
}

// GET `url`, tagged and checked with `tags`: the answer must be a 200.
export function getOk(url, tags = {}) {
  const res = http.get(url, { tags });
  check(res, { 'status 200': (r) => r.status === 200 }, tags);
  return res;
}

// A field of a JSON answer (`error.code`), or undefined when the body is not JSON.
export function jsonField(res, path) {
  try {
    return res.json(path);
  } catch (_) {
    return undefined;
  }
}

// The value of the first sample in Prometheus `text` whose line starts with `prefix` and
// contains `contains`, or undefined.
export function sampleValue(text, prefix, contains = '') {
  const line = (text || '').split('\n').find((l) => l.startsWith(prefix) && l.includes(contains));
  return line ? parseFloat(line.split(' ').pop()) : undefined;
}
