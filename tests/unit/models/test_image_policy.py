"""One image policy (ipl.config.ImagePolicy) for every consumer: the same photo, fed through
instruction building, the training collator, the serving Generator, the evaluation's VLM worker and
the caption actor, reaches the VLM at the same size and as the same grid of visual tokens."""
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ipl.config import ImagePolicy
from ipl.models.vlm import image_policy_of, load_vlm, save_image_policy, set_image_policy
from ipl.photos import fit_photo, photos_that_fit, policy_size, visual_tokens

POLICY = ImagePolicy(min_pixels=56 * 56, max_pixels=140 * 140, max_photos=2)


def jpeg(w, h, seed=0):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def policy_vlm(tiny_vlm, tmp_path_factory):
    """The tiny VLM exported the way `ipl train` exports: processor bounds + ipl_images.json."""
    out = tmp_path_factory.mktemp("policy") / "vlm"
    shutil.copytree(tiny_vlm.path, out)
    vlm = load_vlm(out)
    set_image_policy(vlm.processor, POLICY)
    vlm.processor.save_pretrained(out)
    save_image_policy(out, POLICY)
    return out


def grid(processor, images):
    return processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"].tolist()


def test_the_policy_is_qwen2_vls_resize_rule():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    for h, w in [(300, 200), (4000, 3000), (20, 30), (1080, 1920), (28, 5000)]:
        assert policy_size(h, w, POLICY.min_pixels, POLICY.max_pixels) == tuple(
            smart_resize(h, w, 28, POLICY.min_pixels, POLICY.max_pixels))
    with pytest.raises(ValueError, match="aspect ratio"):
        policy_size(28, 6000, POLICY.min_pixels, POLICY.max_pixels)
    with pytest.raises(ValueError, match="min_pixels"):
        ImagePolicy(min_pixels=50000, max_pixels=40000)


def test_the_model_directory_carries_the_policy(policy_vlm):
    assert image_policy_of(policy_vlm) == POLICY
    assert load_vlm(policy_vlm).images == POLICY
    assert json.loads((policy_vlm / "ipl_images.json").read_text())["max_photos"] == 2


def test_one_photo_through_every_consumer_reaches_the_vlm_the_same(policy_vlm):
    from ipl.caption.stage import CaptionConfig, CaptionModel
    from ipl.data.instructions import InstructionConfig, MakeInstructions
    from ipl.eval.ablation import VLMWorker
    from ipl.generate.prompts import description_messages
    from ipl.serve.config import ServeConfig
    from ipl.serve.generator import Generator
    from ipl.train.collate import Collator

    photos = [jpeg(400, 300, 0), jpeg(180, 360, 1), jpeg(640, 480, 2)]  # three: the policy keeps two
    want = [policy_size(Image.open(io.BytesIO(p)).height, Image.open(io.BytesIO(p)).width, POLICY.min_pixels,
                        POLICY.max_pixels) for p in photos[:2]]
    assert want[0] != (300, 400)  # the policy does resize these

    # 1. instruction building (the prepare stage, with the same block)
    batch = {"listing_id": np.array(["L1"], dtype=object), "category": np.array(["phone"], dtype=object),
             "text": np.array(["Selling my phone."], dtype=object), "sku_id": np.array(["s"], dtype=object),
             "photos": np.array([photos], dtype=object), "language": np.array(["en"], dtype=object),
             "extracted": np.array([json.dumps({"Brand": "Huawei"})], dtype=object)}
    out = MakeInstructions(InstructionConfig(images=POLICY, category_prob=0, extraction_prob=0, caption_prob=0),
                           {"phone": ["Brand"]}, {"s": [("L1", {"Brand": "Huawei"})]})(batch)
    stored = out["photos"][0]
    assert [(Image.open(io.BytesIO(p)).height, Image.open(io.BytesIO(p)).width) for p in stored] == want

    # 2. the training collator (the train config's images block)
    vlm = load_vlm(policy_vlm)
    row = {"id": "r", "photos": photos, "messages": json.dumps(description_messages(3, "Describe.", "en", "ok"))}
    train = Collator(vlm.processor, max_length=4096, policy=POLICY)([row])
    expected_grid = grid(vlm.processor, [fit_photo(p, POLICY) for p in photos[:2]])
    assert train["image_grid_thw"].tolist() == expected_grid

    # 3. serving: the Generator reads the policy from the model directory
    gen = Generator(ServeConfig(models={"vlm": str(policy_vlm)}))
    messages, served = gen._inputs(photos, lambda n: description_messages(n, "Describe.", "en"), 96)
    assert [(im.height, im.width) for im in served] == want and grid(vlm.processor, served) == expected_grid

    # 4. evaluation's VLM worker
    worker = VLMWorker(str(policy_vlm))
    from ipl.serve.generator import vlm_images

    evaluated = vlm_images(photos, worker.images)
    assert [(im.height, im.width) for im in evaluated] == want

    # 5. the caption actor of the index job
    cap = CaptionModel(str(policy_vlm), {}, CaptionConfig(enabled=True).model_dump())
    assert cap.images == POLICY


def test_a_prompt_too_long_for_its_photos_loses_photos_from_the_end_everywhere(policy_vlm):
    from ipl.generate.prompts import description_messages
    from ipl.serve.config import ServeConfig
    from ipl.serve.generator import Generator
    from ipl.train.collate import Collator

    photos = [jpeg(400, 300, 0), jpeg(400, 300, 1)]
    imgs = [fit_photo(p, POLICY) for p in photos]
    per = visual_tokens(imgs[0])
    assert photos_that_fit(10, imgs, 10 + 2 * per) == 2
    assert photos_that_fit(10, imgs, 10 + 2 * per - 1) == 1
    assert photos_that_fit(10, imgs, 10 + per - 1) == 0
    assert photos_that_fit(500, imgs, 100) == 0

    vlm = load_vlm(policy_vlm)
    msgs = description_messages(2, "Describe.", "en", "ok")
    text = vlm.processor.tokenizer.apply_chat_template(msgs, tokenize=False)
    text_tokens = len(vlm.processor.tokenizer(text, add_special_tokens=False)["input_ids"]) - 6
    budget = text_tokens + per + 2  # room for one photo only
    c = Collator(vlm.processor, max_length=budget, policy=POLICY)
    batch = c([{"id": "r", "photos": photos, "messages": json.dumps(msgs)}])
    assert batch["image_grid_thw"].shape[0] == 1 and c.stats["photos_dropped_for_length"] == 1
    assert batch["input_ids"].shape[1] <= budget

    gen = Generator(ServeConfig(models={"vlm": str(policy_vlm)}, generate={"max_model_len": 4096}))
    _, served = gen._inputs(photos, lambda n: description_messages(n, "Describe.", "en"), 96)
    assert len(served) == 2
    prompt = description_messages(2, "Describe.", "en")
    serve_text = vlm.processor.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    serve_tokens = len(vlm.processor.tokenizer(serve_text, add_special_tokens=False)["input_ids"]) - 6
    gen.cfg = gen.cfg.model_copy(update={"max_model_len": 96 + serve_tokens + per + per // 2})
    messages, served = gen._inputs(photos, lambda n: description_messages(n, "Describe.", "en"), 96)
    assert len(served) == 1 and sum(p.get("type") == "image" for m in messages if isinstance(m["content"], list)
                                    for p in m["content"]) == 1
    assert torch.is_tensor(batch["input_ids"])
