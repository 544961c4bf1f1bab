-- The W3C traceparent of the worker span that decided each transaction: the alert publisher
-- continues that trace, alerts and the transaction view carry its trace id, and an analyst can
-- open the whole path of a payment in Jaeger. NULL for rows decided before tracing existed.
ALTER TABLE transactions ADD COLUMN traceparent text
    CHECK (traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
