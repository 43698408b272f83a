from nanodllm.tokenizer import EOS_ID, MASK_ID, N_TOKENS, PAD_ID, VOCAB_SIZE, get_tokenizer


def test_round_trip_and_known_ids():
    tok = get_tokenizer()
    text = "Once upon a time, there was a little dog named Max.\n\nHe liked to run!"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's ids, as every GPT-2 tokenizer gives them


def test_special_ids_and_vocab_padding():
    assert (EOS_ID, MASK_ID, PAD_ID) == (50256, 50257, 50258)
    assert N_TOKENS == 50259 and VOCAB_SIZE % 64 == 0 and VOCAB_SIZE >= N_TOKENS


def test_special_token_text_in_user_input_stays_text():
    tok = get_tokenizer()
    text = "a <|endoftext|> b [MASK] c [PAD]"
    ids = tok.encode(text)
    assert not {EOS_ID, MASK_ID, PAD_ID} & set(ids)
    assert tok.decode(ids) == text


def test_decode_names_special_ids():
    tok = get_tokenizer()
    assert tok.decode(tok.encode("hi") + [MASK_ID, PAD_ID, EOS_ID]) == "hi[MASK][PAD]<|endoftext|>"
