"""False positives found on the real Mercari listings (../shared/realdata/mercari), kept as
regressions, next to the true positives they must not lose."""
import pytest

from ipl.text.pii import find_pii
from ipl.text.safety import RiskTerms, find_risks

TERMS = RiskTerms()


@pytest.mark.parametrize("text", [
    "Up to 4 shades whiter in only 1 week Ships within 48 hours",  # Mercari: not a price
    "just 1 left in this size",
    "Brand new, retails for 39.95. ISBN 978-1-58",                  # Mercari: 9.9 inside 39.95
    "9.9新 成色很好",                                                 # Xianyu: 99% new, a condition
    "Check out more choker styles for sale in my shop!",            # Mercari: the seller's own shop
    "Read my shop bio before purchasing",
])
def test_not_a_risk(text):
    assert find_risks(text, TERMS) == []


@pytest.mark.parametrize("text, kind", [
    ("only 9.9 today", "low_price"), ("only $1 for this", "low_price"), ("今天只要9.9", "low_price"),
    ("9.9元包邮", "low_price"), ("1 dollar flash sale", "low_price"), ("一元秒杀", "low_price"),
    ("cheaper on my taobao shop", "traffic"), ("check my ebay store for more", "traffic"),
])
def test_still_a_risk(text, kind):
    assert kind in find_risks(text, TERMS)


@pytest.mark.parametrize("text", [
    "1902.1903.1905.1907.",                          # Mercari: a list of dotted numbers
    "It's t mobile good working missing stick 356095060884624",  # Mercari: an IMEI
    "IMEI: 35609506088462", "serial no. 1234567890123",
    "version 10.0.19041.1234",
])
def test_not_a_phone(text):
    assert [h for h in find_pii(text) if h.kind == "phone"] == []


@pytest.mark.parametrize("text, number", [
    ("call 555.123.4567", "555.123.4567"), ("phone 138.1234.5678", "138.1234.5678"),
    ("13812345678", "13812345678"), ("138 1234 5678", "138 1234 5678"), ("+86 13812345678", "+86 13812345678"),
    ("+1 (555) 123-4567", "+1 (555) 123-4567"), ("１３８１２３４５６７８", "13812345678"),
    ("text me at 555-123-4567 x", "555-123-4567"),
])
def test_still_a_phone(text, number):
    assert [h.text for h in find_pii(text) if h.kind == "phone"] == [number]
