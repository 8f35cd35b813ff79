"""The locked trunk's feature cache: parts on disk shared by processes, keyed by pixels and by the
trunk's weights, and embeddings through it equal to embeddings without it."""
import numpy as np
import pytest
import torch
from PIL import Image

from ipl.models.clip import load_clip
from ipl.models.config import PackagedClipConfig
from ipl.models.feature_cache import FeatureCache, photo_key, trunk_key
from ipl.models.clip_train import prepare_data
from ipl.models.packaged import build_packaged_clip


def _photo(seed: int, size=(90, 120)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


def test_parts_written_by_one_cache_are_read_by_another_and_by_a_rescan(tmp_path):
    a, b = FeatureCache(tmp_path, "k"), FeatureCache(tmp_path, "k")
    keys = [photo_key(_photo(i)) for i in range(3)]
    feats = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert a.get(keys) == [None, None, None]
    a.put(keys[:2], feats[:2])
    got = b.get(keys)  # b looked before a wrote: the misses make it rescan
    assert np.array_equal(got[0], feats[0]) and np.array_equal(got[1], feats[1]) and got[2] is None
    a.put(keys, feats)  # only the new key is written
    assert len(list((tmp_path / "k").glob("part-*.keys.npy"))) == 2
    c = FeatureCache(tmp_path, "k")
    assert len(c) == 3 and np.array_equal(c.get([keys[2]])[0], feats[2])
    assert FeatureCache(tmp_path, "other").get(keys) == [None, None, None]  # another trunk's directory
    assert not list((tmp_path / "k").glob(".*.tmp"))
    with pytest.raises(ValueError, match="2 keys for 3 features"):
        a.put(keys[:2], feats)


def test_a_part_with_missing_features_is_skipped_not_fatal(tmp_path):
    a = FeatureCache(tmp_path, "k")
    keys = [photo_key(_photo(0))]
    a.put(keys, np.ones((1, 4), np.float32))
    next((tmp_path / "k").glob("part-*.feats.npy")).unlink()
    assert FeatureCache(tmp_path, "k").get(keys) == [None]


def test_the_key_follows_the_pixels_and_the_trunk():
    img = _photo(1)
    assert photo_key(img) == photo_key(img.copy())
    assert photo_key(img) != photo_key(img.resize((60, 45)))
    px = np.asarray(img).copy()
    px[0, 0, 0] ^= 1
    assert photo_key(img) != photo_key(Image.fromarray(px))
    lin = torch.nn.Linear(3, 2)
    before = trunk_key(lin, "pre")
    assert trunk_key(lin, "other preprocess") != before
    with torch.no_grad():
        lin.weight[0, 0] += 1
    assert trunk_key(lin, "pre") != before


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    return build_packaged_clip(PackagedClipConfig(embed_dim=32), tmp_path_factory.mktemp("pclip") / "clip")


def test_embeddings_through_the_cache_equal_the_uncached_ones_and_skip_the_trunk(packaged, tmp_path):
    images = [_photo(i) for i in range(5)]
    plain = packaged.encode_images(images)
    first = load_clip(packaged.source)
    assert first.use_feature_cache(tmp_path)
    assert torch.allclose(first.encode_images(images[:3]), plain[:3], atol=1e-6)
    # another process: a fresh model reading the same directory (torch's trunk, whose calls a hook counts)
    second = load_clip(packaged.source, trunk_runtime="torch")
    second.use_feature_cache(tmp_path)
    calls = []
    second.model.visual.trunk.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    assert torch.allclose(second.encode_images(images), plain, atol=1e-6)
    assert calls == [2]  # only the two photos the first one had not seen went through the trunk
    assert second.feature_cache.hits == 3 and second.feature_cache.misses == 2


def test_fine_tuning_features_come_from_the_cache_the_check_filled(packaged, tmp_path):
    import io

    def jpeg(seed):
        buf = io.BytesIO()
        _photo(seed).save(buf, format="JPEG")
        return buf.getvalue()

    rows = [{"category": "phones", "title": f"phone {i}", "sku_id": f"s{i % 2}", "photos": [jpeg(i), jpeg(10 + i)]}
            for i in range(4)]
    plain = prepare_data(packaged, rows)
    check = load_clip(packaged.source)
    check.use_feature_cache(tmp_path)
    check.encode_images([Image.open(io.BytesIO(p)).convert("RGB") for r in rows for p in r["photos"]])
    tune = load_clip(packaged.source)
    tune.use_feature_cache(tmp_path)
    calls = []
    tune.model.visual.trunk.register_forward_hook(lambda m, i, o: calls.append(1))
    cached = prepare_data(tune, rows)
    assert calls == [] and cached.features
    assert torch.allclose(cached.pixels, plain.pixels, atol=1e-6) and torch.equal(cached.groups, plain.groups)


def test_a_tower_without_a_trunk_runs_whole(tmp_path):
    from ipl.models.clip import build_tiny_clip
    from ipl.models.config import TinyClipConfig

    tiny = build_tiny_clip(TinyClipConfig(), tmp_path / "tiny")
    assert not tiny.use_feature_cache(tmp_path / "cache") and tiny.feature_cache is None
