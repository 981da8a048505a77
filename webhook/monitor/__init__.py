"""`kubefence monitor`: live evasion alerts from the API server's audit webhook backend.

`feed` is the pure intake (EventList in, counts and alerts out) over the detection core shared
with `kubefence correlate` (`webhook.correlate.detect`); `server` is the HTTPS shell around it,
`canary` the feed's heartbeat through the API client, `follow` the same detections over a growing,
rotating audit log file (`kubefence correlate --follow`), `metrics` their Prometheus series.
"""
