-- Per-card velocity and amount profile, one row per transaction.
SELECT
  card_id,
  event_time,
  txn_id,
  amount,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS txn_count_10m,
  sum(is_micro) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS micro_count_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS amount_sum_1h,
  avg(amount) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '24 hours' PRECEDING AND CURRENT ROW) AS amount_avg_24h,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '24 hours' PRECEDING AND CURRENT ROW) AS amount_max_24h,
  stddev_samp(amount) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '7 days' PRECEDING AND CURRENT ROW) AS amount_stddev_7d,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS txn_count_lifetime
FROM transactions
