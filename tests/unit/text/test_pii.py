"""PII detection: phones (incl. Chinese mobiles, full-width), WeChat ids in context, e-mails, URLs,
platforms; and the product text that must NOT be flagged."""
import pytest

from ipl.text.pii import find_pii, mask_pii


@pytest.mark.parametrize("text,kind", [
    ("call 13812345678 anytime", "phone"),
    ("phone 181 0604 4411, colour", "phone"),
    ("电话：138-1234-5678", "phone"),
    ("+86 17382545072", "phone"),
    ("text me at １９２９１４２９４１７", "phone"),          # full-width digits (NFKC)
    ("联系１３８ １２３４ ５６７８", "phone"),
    ("+1 (415) 555-0134", "phone"),
    ("VX cbkrnmb678, thanks", "wechat"),
    ("add my wechat yxcms044", "wechat"),
    ("v: kxkb071", "wechat"),
    ("vx123456", "wechat"),
    ("加微信abc_1234", "wechat"),
    ("薇信：hello99", "wechat"),
    ("加v abc12345", "wechat"),
    ("ＶＸ：ｗｘ１２３４５６", "wechat"),
    ("email me john.doe88@gmail.com", "email"),
    ("邮箱 abc123@qq.com", "email"),
    ("more pics at http://bit.ly/xyzabc", "url"),
    ("see www.shopabc.com", "url"),
    ("cheaper on my taobao shop", "platform"),
    ("拼多多搜我店名", "platform"),
])
def test_detects(text, kind):
    kinds = {h.kind for h in find_pii(text)}
    assert kind in kinds, (text, kinds)


@pytest.mark.parametrize("text", [
    "Apple iPhone 11 256GB, battery health 88%, 16GB+512GB",
    "Sony WH-1000XM4 noise cancelling, Casio G-Shock GA-2100 40mm",
    "Nike Air Max 90 size 10.5, EU 42, US 9",
    "shutter count around 60k, price 1299, bought 12/03/2021, model 2019",
    "deep v sweater, V neck blouse",
    "自用华为Mate 10 Pro，128G，蓝色，成色如图",
    "Canon EOS 80D with 18-135mm kit lens, 24.2MP",
    "[rm] for the price, ships in 1-2 business days",
])
def test_no_false_positives_on_product_text(text):
    assert find_pii(text) == [], [(h.kind, h.text) for h in find_pii(text)]


def test_mask():
    masked = mask_pii("Selling my phone, call 138 1234 5678 or VX: abc12345, mail a@b.com, www.x.com")
    assert masked == "Selling my phone, call [PHONE] or [WECHAT], mail [EMAIL], [URL]"


def test_platform_names_optional():
    assert find_pii("also on ebay", platforms=False) == []
