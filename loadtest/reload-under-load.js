// Zero-downtime proof: a constant arrival rate of requests while the configuration is
// reloaded RELOADS times through the admin API. Not one request may fail.
//
//   loadtest/upgrade-under-load.sh        # starts everything, also flips the config file
//                                         # between reloads and upgrades the binary twice
//   BASE_URL=http://127.0.0.1:PORT ADMIN_URL=http://127.0.0.1:PORT ADMIN_TOKEN=... \
//     k6 run loadtest/reload-under-load.js
//
// RATE (requests/s, default 500), DURATION (default 30s), RELOADS (default 10), PATH_
// (default /api/zero-downtime).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { constantRate, envUrl, getOk, seconds, SUMMARY_TREND_STATS } from './lib.js';

const BASE_URL = envUrl('BASE_URL');
const ADMIN_URL = envUrl('ADMIN_URL');
const ADMIN_TOKEN = __ENV.ADMIN_TOKEN || 'loadtest';
const RATE = parseInt(__ENV.RATE || '500', 10);
const DURATION = __ENV.DURATION || '30s';
const RELOADS = parseInt(__ENV.RELOADS || '10', 10);
const PATH_ = __ENV.PATH_ || '/api/zero-downtime';

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    traffic: constantRate(RATE, DURATION, 50, 200, { exec: 'traffic' }),
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
  getOk(`${BASE_URL}${PATH_}`, { kind: 'traffic' });
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
