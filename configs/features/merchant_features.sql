-- Per-merchant traffic, one row per transaction.
SELECT
  merchant_id,
  event_time,
  txn_id,
  count(*) OVER (PARTITION BY merchant_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS txn_count_1h,
  avg(amount) OVER (PARTITION BY merchant_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '24 hours' PRECEDING AND CURRENT ROW) AS amount_avg_24h
FROM transactions
