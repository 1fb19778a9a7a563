# engine: forward_ref evaluates the real model in three formats; slow on a busy machine.
set(TIMEOUT_forward_ref 300)
set(TIMEOUT_model 120)
# e2e_greedy: 20 prompts x 128 tokens x k {1,4,8} x L {1,2,15} through real meshes
# with the real model (skips without it); see tests/test_e2e_greedy.c.
set(TIMEOUT_e2e_greedy 3000)
set(TIMEOUT_e2e_sampling 300)
set(TIMEOUT_services_smollm 120)
# telemetry: a real Prometheus and headless Chromium start slowly on a busy machine.
set(TIMEOUT_prometheus 110)
set(TIMEOUT_dashboard 150)
# deploy: renders compose and 3 overlays several times (kubectl, python).
set(TIMEOUT_deploy 180)
set(TIMEOUT_gpu_model 900)
# services: the real-model split check loads SmolLM2 in four processes.
# tokenizer_golden: ~19 s idle (3 MB corpus, every code point, 4 vocabularies); slack for a loaded machine
set(TIMEOUT_tokenizer_golden 300)
set(TIMEOUT_offline 300)
# engine: greedy continuations vs llama.cpp (3 x 384 steps of the real model); slow on a busy machine.
set(TIMEOUT_llamacpp_greedy 300)
