set(TIMEOUT_forward_ref 300)
set(TIMEOUT_model 120)
set(TIMEOUT_services_smollm 120)
# telemetry: a real Prometheus and headless Chromium start slowly on a busy machine.
set(TIMEOUT_prometheus 110)
set(TIMEOUT_dashboard 150)
