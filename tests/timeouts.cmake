set(TIMEOUT_forward_ref 300)
set(TIMEOUT_model 120)
