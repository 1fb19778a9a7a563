# engine: forward_ref evaluates the real model in three formats; slow on a busy machine.
set(TIMEOUT_forward_ref 300)
set(TIMEOUT_model 120)
# telemetry: a real Prometheus and headless Chromium start slowly on a busy machine.
set(TIMEOUT_prometheus 110)
set(TIMEOUT_dashboard 150)
set(TIMEOUT_gpu_model 900)
set(TIMEOUT_services_smollm 120)
# services: the real-model split check loads SmolLM2 in four processes.
# telemetry: a real Prometheus and headless Chromium start slowly on a busy machine.
