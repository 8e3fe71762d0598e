// Latency at a fixed load: a constant arrival rate of GETs to one URL. compare.sh runs it
// against every proxy so the p50/p99 columns compare like with like.
//
//   URL=http://127.0.0.1:PORT/ RATE=2000 DURATION=10s [HEADER='Authorization: Bearer ...'] \
//     k6 run loadtest/fixed-rate.js
import http from 'k6/http';
import { check } from 'k6';
import { constantRate, requiredEnv, SUMMARY_TREND_STATS } from './lib.js';

const URL = requiredEnv('URL');
const RATE = parseInt(__ENV.RATE || '2000', 10);
// One extra request header, "Name: value" (compare.sh's auth rows send a bearer token).
const HEADERS = {};
if (__ENV.HEADER) {
  const at = __ENV.HEADER.indexOf(':');
  HEADERS[__ENV.HEADER.slice(0, at).trim()] = __ENV.HEADER.slice(at + 1).trim();
}

export const options = {
  // The TLS rows use a self-signed test certificate.
  insecureSkipTLSVerify: true,
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    fixed: constantRate(RATE, __ENV.DURATION || '10s', 50, 400),
  },
  thresholds: {
    http_req_failed: ['rate==0'],
    // k6 reports the arrival rate it could not keep as dropped iterations.
    dropped_iterations: ['count<' + Math.max(1, Math.floor(RATE * 0.01))],
  },
};

export default function () {
  const res = http.get(URL, { headers: HEADERS });
  check(res, { 'status 200': (r) => r.status === 200 });
}
