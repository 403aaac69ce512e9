-- Requests per service and day as nginx saw them, beside the application's
-- own view of the same service: log lines, errors and latency.
WITH hits AS (
    SELECT CAST(time AS DATE)                                AS dt,
           split_part(path, '/', 4)                          AS service,
           count(*)                                          AS requests,
           sum(bytes)                                        AS bytes_sent,
           sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END)    AS server_errors
    FROM access
    WHERE path LIKE '/api/v1/%'
    GROUP BY 1, 2
),
app_stats AS (
    SELECT CAST(ts AS DATE)                                  AS dt,
           service,
           count(*)                                          AS app_log_lines,
           sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END)  AS app_errors,
           avg(latency_ms)                                   AS avg_latency_ms,
           max(latency_ms)                                   AS max_latency_ms
    FROM app
    GROUP BY 1, 2
)
SELECT h.dt,
       h.service,
       h.requests,
       h.bytes_sent,
       h.server_errors,
       coalesce(a.app_log_lines, 0) AS app_log_lines,
       coalesce(a.app_errors, 0)    AS app_errors,
       a.avg_latency_ms,
       a.max_latency_ms
FROM hits h
LEFT JOIN app_stats a ON a.dt = h.dt AND a.service = h.service
ORDER BY h.dt, h.service
