// Finds the highest request rate the gateway sustains with p99 under a bound: one
// constant-arrival-rate step per rate in RATES, back to back; a step passes when its p99
// is under P99_MS, no request failed and k6 dropped under 1% of its iterations (it could
// not keep the rate). The summary (and loadtest/results/throughput-*.json) names the best
// passing rate.
//
//   RATES=2000,4000,8000,16000 STEP=10s P99_MS=20 loadtest/run.sh throughput
//   BASE_URL=http://127.0.0.1:PORT k6 run loadtest/throughput.js
import { constantRate, envUrl, getOk, seconds, SUMMARY_TREND_STATS } from './lib.js';

const BASE_URL = envUrl('BASE_URL');
const PATH_ = __ENV.PATH_ || '/api/throughput';
const RATES = (__ENV.RATES || '1000,2000,4000,8000').split(',').map((r) => parseInt(r, 10));
const STEP = __ENV.STEP || '10s';
const P99_MS = parseFloat(__ENV.P99_MS || '25');

const scenarios = {};
const thresholds = { http_req_failed: ['rate==0'] };
RATES.forEach((rate, i) => {
  const name = `rate_${rate}`;
  scenarios[name] = constantRate(rate, STEP, Math.min(1000, Math.max(20, Math.ceil(rate / 100))), 2000, {
    startTime: `${i * (seconds(STEP) + 1)}s`,
    tags: { step: name },
  });
  // Declared so each step's numbers appear in the summary; handleSummary judges them.
  thresholds[`http_req_duration{step:${name}}`] = ['p(99)>=0'];
  thresholds[`http_reqs{step:${name}}`] = ['count>=0'];
  thresholds[`dropped_iterations{step:${name}}`] = ['count>=0'];
});

export const options = {
  scenarios,
  thresholds,
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export default function () {
  getOk(`${BASE_URL}${PATH_}`);
}

export function handleSummary(data) {
  const steps = RATES.map((rate) => {
    const name = `rate_${rate}`;
    const metric = (m) => (data.metrics[`${m}{step:${name}}`] || { values: {} }).values;
    const p99 = metric('http_req_duration')['p(99)'];
    const sent = metric('http_reqs').count || 0;
    const dropped = metric('dropped_iterations').count || 0;
    const ok = p99 !== undefined && p99 < P99_MS && dropped <= sent * 0.01;
    return { rate, p99_ms: p99, sent, dropped, ok };
  });
  const best = steps.filter((s) => s.ok).reduce((a, s) => (s.rate > a ? s.rate : a), 0);
  const lines = steps.map(
    (s) => `  ${s.ok ? 'pass' : 'FAIL'} ${s.rate} req/s: p99 ${s.p99_ms === undefined ? 'n/a' : s.p99_ms.toFixed(2)} ms, ${s.sent} sent, ${s.dropped} dropped`,
  );
  const verdict = `\nmax rate with p99 < ${P99_MS} ms: ${best} req/s\n${lines.join('\n')}\n`;
  // Only the verdict: the full numbers are in the --summary-export file run.sh writes.
  const out = { stdout: verdict };
  if (__ENV.RESULT_JSON) out[__ENV.RESULT_JSON] = JSON.stringify({ best_rate: best, p99_bound_ms: P99_MS, steps }, null, 2);
  return out;
}
