import json

from ipl.generate.prompts import description_messages, description_prompt


def test_prompt_variants():
    assert "The item is" not in description_prompt()
    p = description_prompt("phone", ["Brand", "Model"])
    assert "The item is a phone" in p and "Brand, Model" in p and "<reference>" not in p
    p = description_prompt("phone", ["Brand"], {"Brand": "Huawei"})
    assert json.loads(p.split("<reference>")[1].split("</reference>")[0]) == {"Brand": "Huawei"}
    zh = description_prompt("手机", ["品牌"], {"品牌": "华为"}, "zh")
    assert "类目" in zh and "华为" in zh


def test_messages():
    msgs = description_messages(2, "hi", answer="Selling")
    assert msgs[1]["content"][:2] == [{"type": "image"}, {"type": "image"}]
    assert msgs[-1] == {"role": "assistant", "content": "Selling"}
