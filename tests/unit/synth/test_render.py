"""Renderer: determinism; same SKU looks alike, other colours/SPUs differ."""
import numpy as np

from ipl.synth.catalogue import Catalogue
from ipl.synth.render import render_photo, to_jpeg


def object_colour(img):
    """Median colour of the object: pixels unlike their row's background (the edge pixel)."""
    arr = np.asarray(img).astype(float)
    mask = np.abs(arr - arr[:, :1, :]).sum(axis=2) > 60
    return np.median(arr[mask], axis=0)


def test_deterministic_given_rng():
    cat = Catalogue.build()
    sku = cat.skus[0]
    a = render_photo(cat, sku, np.random.default_rng(5), 64)
    b = render_photo(cat, sku, np.random.default_rng(5), 64)
    assert a.size == (64, 64)
    assert to_jpeg(a) == to_jpeg(b)


def test_same_sku_closer_than_other_colour():
    """Photos of one SKU agree in colour; the same SPU in another colour does not."""
    cat = Catalogue.build(colors_per_spu=3, variants_per_spu=1)
    rng = np.random.default_rng(0)
    same, other = [], []
    for spu in sorted({s.spu_id for s in cat.skus}):
        skus = [s for s in cat.skus if s.spu_id == spu]
        a1, a2 = (object_colour(render_photo(cat, skus[0], rng, 96)) for _ in range(2))
        b = object_colour(render_photo(cat, skus[1], rng, 96))
        same.append(np.linalg.norm(a1 - a2))
        other.append(np.linalg.norm(a1 - b))
    same, other = np.array(same), np.array(other)
    assert np.median(same) < 0.5 * np.median(other), (np.median(same), np.median(other))
    assert (same < other).mean() > 0.75


def test_size_is_configurable():
    cat = Catalogue.build()
    assert render_photo(cat, cat.skus[3], np.random.default_rng(1), 128).size == (128, 128)
