// Zero-downtime proof: a constant arrival rate of requests while the configuration is
// reloaded RELOADS times through the admin API. Not one request may fail.
//
//   BASE_URL=http://127.0.0.1:28080 ADMIN_URL=http://127.0.0.1:28990 ADMIN_TOKEN=... \
//     k6 run loadtest/reload-under-load.js
//   loadtest/upgrade-under-load.sh        # starts everything, also flips the config file
//                                         # between reloads and upgrades the binary twice
//
// RATE (requests/s, default 500), DURATION (default 30s), RELOADS (default 10), PATH_
// (default /api/zero-downtime).
import http from 'k6/http';
import { check, sleep } from 'k6';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:28080').replace(/\/+$/, '');
const ADMIN_URL = (__ENV.ADMIN_URL || 'http://127.0.0.1:28990').replace(/\/+$/, '');
const ADMIN_TOKEN = __ENV.ADMIN_TOKEN || 'loadtest';
const RATE = parseInt(__ENV.RATE || '500', 10);
const DURATION = __ENV.DURATION || '30s';
const RELOADS = parseInt(__ENV.RELOADS || '10', 10);
const PATH_ = __ENV.PATH_ || '/api/zero-downtime';

function seconds(duration) {
  const match = /^(\d+)(ms|s|m)$/.exec(duration);
  if (!match) return 30;
  const n = parseInt(match[1], 10);
  return match[2] === 'ms' ? n / 1000 : match[2] === 'm' ? n * 60 : n;
}

export const options = {
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
  scenarios: {
    traffic: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: 50,
      maxVUs: 200,
      exec: 'traffic',
    },
    reloads: {
      executor: 'per-vu-iterations',
      vus: 1,
      iterations: RELOADS,
      maxDuration: DURATION,
      exec: 'reload',
    },
  },
  thresholds: {
    // The whole point: zero failed requests across every reload (and upgrade).
    'http_req_failed{scenario:traffic}': ['rate==0'],
    'checks{kind:traffic}': ['rate==1'],
    'checks{kind:reload}': ['rate==1'],
  },
};

export function traffic() {
  const res = http.get(`${BASE_URL}${PATH_}`, { tags: { kind: 'traffic' } });
  check(res, { 'traffic: status 200': (r) => r.status === 200 }, { kind: 'traffic' });
}

export function reload() {
  // Spread the reloads over the run, leaving the first and last stretch untouched.
  sleep(seconds(DURATION) / (RELOADS + 1));
  const res = http.post(`${ADMIN_URL}/reload`, null, {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
    tags: { kind: 'reload' },
  });
  check(res, { 'reload: status 200': (r) => r.status === 200 }, { kind: 'reload' });
}
