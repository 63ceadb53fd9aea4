-- Per-event preparation, applied to every batch as it arrives.
SELECT
  txn_id,
  card_id,
  merchant_id,
  amount,
  country,
  mcc,
  event_time,
  CASE WHEN amount < 2.00 THEN 1 ELSE 0 END AS is_micro
FROM transactions_raw
WHERE card_id IS NOT NULL
