# telemetry: a real Prometheus and headless Chromium start slowly on a busy machine.
set(TIMEOUT_prometheus 110)
set(TIMEOUT_dashboard 150)
set(TIMEOUT_deploy 180)   # renders compose + 3 overlays several times (kubectl, python)
