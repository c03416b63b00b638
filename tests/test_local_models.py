"""The local tokenizer and tiny models load through the same path real weights use."""

from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_llama_round_trips_through_from_pretrained(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert model.config.model_type == "llama"
    assert (tiny_llama_dir / "model.safetensors").is_file()
    ids = tokenizer("The river carries sediment.", return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == "The river carries sediment."
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 3


def test_chat_template_is_saved_with_the_tokenizer(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        tokenize=False, add_generation_prompt=True,
    )
    assert text == "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
