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
set(TIMEOUT_dashboard 180)
# deploy: renders compose and 3 overlays several times (kubectl, python).
set(TIMEOUT_deploy 180)
set(TIMEOUT_gpu_model 900)
# services: the real-model split check loads SmolLM2 in four processes.
# tokenizer_golden: ~19 s idle (3 MB corpus, every code point, 4 vocabularies); slack for a loaded machine
set(TIMEOUT_tokenizer_golden 300)
set(TIMEOUT_offline 300)
# telemetry: real meshes (tiny model) with telemetry; cancel waits for metric flushes.
set(TIMEOUT_telemetry_mesh 180)
set(TIMEOUT_gateway_cancel 180)
# chaos: a mesh of 14 processes, 12 faults during 12 generations (tiny model).
set(TIMEOUT_chaos 200)
set(TIMEOUT_gpu_mesh 900)   # GPU hosts only (skips elsewhere): a mesh per format, 12 generations each
# privacy_full: the real-model case loads SmolLM2 in the test (reference) and in a mesh.
set(TIMEOUT_privacy_full 300)
# engine: greedy continuations vs llama.cpp (3 x 384 steps of the real model); slow on a busy machine.
set(TIMEOUT_llamacpp_greedy 300)
