from ipl.text.normalize import has_cjk, match_key, normalize, special_char_ratio, text_length


def test_nfkc_and_whitespace():
    assert normalize("ｉＰｈｏｎｅ　１１ \n\t 128GB") == "iPhone 11 128GB"
    assert normalize(None) == ""


def test_match_key():
    assert match_key("Mate 10 Pro") == match_key("mate10pro") == match_key("MATE-10 PRO") == "mate10pro"
    assert match_key("64 GB") == match_key("64GB")


def test_cjk_length_and_special_ratio():
    assert has_cjk("自用") and not has_cjk("used")
    assert text_length("自用ab") == 6
    assert special_char_ratio("★★★★ok") > 0.5
    assert special_char_ratio("Used, works fine!") == 0.0
