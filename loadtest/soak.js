// Soak: a steady arrival rate for a long time, while the gateway's resident memory
// (portcullis_process_resident_memory_bytes on the admin /metrics) is sampled. After a
// warm-up, every sample must stay within MEMORY_BOUND (default ±10%) of the first one, and
// the error rate must stay at zero.
//
//   DURATION=10m RATE=2000 loadtest/run.sh soak
//   BASE_URL=http://127.0.0.1:PORT ADMIN_URL=http://127.0.0.1:PORT k6 run loadtest/soak.js
import http from 'k6/http';
import { sleep } from 'k6';
import { Gauge, Rate } from 'k6/metrics';
import { constantRate, envUrl, getOk, sampleValue, SUMMARY_TREND_STATS } from './lib.js';

const BASE_URL = envUrl('BASE_URL');
const ADMIN_URL = envUrl('ADMIN_URL');
const PATH_ = __ENV.PATH_ || '/api/soak';
const DURATION = __ENV.DURATION || '10m';
const RATE = parseInt(__ENV.RATE || '1000', 10);
const WARMUP_S = parseInt(__ENV.WARMUP_S || '30', 10);
const SAMPLE_S = parseInt(__ENV.SAMPLE_S || '10', 10);
const BOUND = parseFloat(__ENV.MEMORY_BOUND || '0.10');

const rss = new Gauge('gateway_rss_bytes');
const memoryFlat = new Rate('gateway_memory_within_bound');

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    traffic: constantRate(RATE, DURATION, 50, 500, { exec: 'traffic' }),
    memory: {
      executor: 'constant-vus',
      vus: 1,
      duration: DURATION,
      exec: 'memory',
    },
  },
  thresholds: {
    'http_req_failed{scenario:traffic}': ['rate==0'],
    gateway_memory_within_bound: ['rate==1'],
  },
};

export function traffic() {
  getOk(`${BASE_URL}${PATH_}`, { kind: 'traffic' });
}

function residentBytes() {
  const res = http.get(`${ADMIN_URL}/metrics`, { tags: { kind: 'metrics' } });
  return sampleValue(res.body, 'portcullis_process_resident_memory_bytes ');
}

let baseline;
let started;

export function memory() {
  started = started || Date.now();
  sleep(SAMPLE_S);
  const bytes = residentBytes();
  if (bytes === undefined) {
    memoryFlat.add(false);
    return;
  }
  rss.add(bytes);
  if ((Date.now() - started) / 1000 < WARMUP_S) return;
  if (baseline === undefined) {
    baseline = bytes;
    return;
  }
  const drift = Math.abs(bytes - baseline) / baseline;
  memoryFlat.add(drift <= BOUND);
  if (drift > BOUND) {
    console.warn(`resident memory ${bytes} is ${(drift * 100).toFixed(1)}% away from ${baseline}`);
  }
}
