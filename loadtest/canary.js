// Canary split: every iteration is a new user (X-User), so the share of requests the
// canary pool serves must be the configured weight (±2 points); a user asked again gets
// the same variant; the force header overrides the split. Which pool answered comes from
// the echo body's "listen" address.
//
//   BASE_URL=http://127.0.0.1:28080 CANARY_ADDR=127.0.0.1:28002 WEIGHT=10 k6 run loadtest/canary.js
//   loadtest/run.sh canary                      # loadtest/conf/canary.yaml
import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import exec from 'k6/execution';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:28080').replace(/\/+$/, '');
const CANARY_ADDR = __ENV.CANARY_ADDR || '127.0.0.1:28002';
const WEIGHT = parseFloat(__ENV.WEIGHT || '10') / 100;

const canaryShare = new Rate('canary_share');
const sticky = new Rate('canary_sticky');
const forced = new Rate('canary_forced');

export const options = {
  scenarios: {
    split: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE || '300', 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: 20,
      maxVUs: 100,
    },
  },
  thresholds: {
    canary_share: [`rate>=${WEIGHT - 0.02}`, `rate<=${WEIGHT + 0.02}`],
    canary_sticky: ['rate==1'],
    canary_forced: ['rate==1'],
    http_req_failed: ['rate==0'],
  },
};

function servedByCanary(res) {
  try {
    return res.json('listen') === CANARY_ADDR;
  } catch (_) {
    return undefined;
  }
}

export default function () {
  const user = `user-${exec.scenario.iterationInTest}`;
  const first = http.get(`${BASE_URL}/api/canary?echo=1`, { headers: { 'X-User': user } });
  check(first, { 'status 200': (r) => r.status === 200 });
  const variant = servedByCanary(first);
  if (variant === undefined) return;
  canaryShare.add(variant);

  // One user in ten is asked again: same variant.
  if (exec.scenario.iterationInTest % 10 === 0) {
    const again = http.get(`${BASE_URL}/api/canary?echo=1`, { headers: { 'X-User': user } });
    sticky.add(servedByCanary(again) === variant);
  }
  // One in twenty forces the other way.
  if (exec.scenario.iterationInTest % 20 === 0) {
    const force = variant ? 'never' : 'always';
    const res = http.get(`${BASE_URL}/api/canary?echo=1`, {
      headers: { 'X-User': user, 'X-Canary': force },
    });
    forced.add(servedByCanary(res) === !variant);
  }
}
