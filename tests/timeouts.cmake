# tokenizer_golden: ~19 s idle (3 MB corpus, every code point, 4 vocabularies); slack for a loaded machine
set(TIMEOUT_tokenizer_golden 300)
