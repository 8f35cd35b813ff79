"""The photo-colour head: features describe the item's colour more than the background; the head
learns colours from labelled photos and round-trips through the index version directory."""
import io

import numpy as np
from PIL import Image, ImageDraw

from ipl.index.category import train_head
from ipl.index.colour import (FEATURE_DIM, GREYS, ColourPredictor, colour_features, photos_features,
                              save_colour_head)

COLOURS = {"Red": (200, 30, 30), "Blue": (30, 60, 200), "Green": (40, 160, 60), "Black": (20, 20, 20)}


def photo(rgb, rng):
    bg = tuple(int(x) for x in rng.integers(150, 256, 3))
    img = Image.new("RGB", (96, 96), bg)
    d = ImageDraw.Draw(img)
    x, y = rng.integers(20, 36, 2)
    d.rectangle([x, y, x + 40, y + 40], fill=tuple(int(max(0, min(255, c + rng.integers(-25, 25)))) for c in rgb))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def test_features_are_unit_length_and_follow_the_item_not_the_background():
    rng = np.random.default_rng(0)
    red, red2, blue = (colour_features(photo(COLOURS[c], rng)) for c in ("Red", "Red", "Blue"))
    assert abs(float(np.linalg.norm(red)) - 1) < 1e-5 and red.shape == (FEATURE_DIM,)
    assert red @ red2 > red @ blue
    assert abs(float(np.linalg.norm(photos_features([photo(COLOURS["Red"], rng)] * 2))) - 1) < 1e-5


def test_head_learns_colours_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    names = list(COLOURS) * 40
    feats = np.stack([colour_features(photo(COLOURS[n], rng)) for n in names])
    head = train_head(feats, names, epochs=80, lr=5e-2)
    save_colour_head(head, tmp_path, "Color")
    pred = ColourPredictor.load(tmp_path)
    assert pred.key == "Color" and ColourPredictor.load(tmp_path / "nothing") is None
    test = [(n, photo(COLOURS[n], rng)) for n in COLOURS for _ in range(5)]
    right = sum(pred.predict([p], 3)[0]["value"] == n for n, p in test)
    assert right >= 0.9 * len(test), right
    top = pred.predict([test[0][1]], 3)
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"] and 0 < sum(t["score"] for t in top) <= 1.0001


def test_a_white_border_does_not_swamp_a_small_item():
    """The background is read off the border and left out: a small navy item on a large white
    ground is described by navy, as on a catalogue photo."""
    from ipl.index.colour import item_weights

    img = Image.new("RGB", (200, 200), (250, 250, 250))
    ImageDraw.Draw(img).rectangle([80, 70, 120, 130], fill=(25, 35, 90))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    navy = Image.new("RGB", (200, 200), (25, 35, 90))
    nbuf = io.BytesIO()
    navy.save(nbuf, format="PNG")
    white = Image.new("RGB", (200, 200), (250, 250, 250))
    wbuf = io.BytesIO()
    white.save(wbuf, format="PNG")
    f, n, w = (colour_features(b.getvalue()) for b in (buf, nbuf, wbuf))
    assert f @ n > 0.7 and np.argmax(f) == np.argmax(n) and f @ w < 0.2
    # nothing stands out from the border: the whole (centre-weighted) photo is used
    flat = np.full((64 * 64, 3), 128.0, np.float32)
    assert item_weights(flat).sum() > 0


def test_a_white_item_on_white_is_the_item_not_what_surrounds_it():
    """A white shirt outlined on a white ground, worn (skin-coloured arms and neck, blue jeans):
    the shirt is counted, not thrown away with the ground while arms and jeans describe it."""
    img = Image.new("RGB", (200, 200), (250, 250, 250))
    d = ImageDraw.Draw(img)
    d.rectangle([85, 20, 115, 45], fill=(205, 150, 120))  # neck + face
    d.rectangle([40, 50, 60, 120], fill=(205, 150, 120))  # arms
    d.rectangle([140, 50, 160, 120], fill=(205, 150, 120))
    d.rectangle([70, 140, 130, 199], fill=(40, 60, 120))  # jeans
    d.rectangle([60, 45, 140, 140], fill=(246, 246, 246), outline=(200, 200, 200), width=2)  # the shirt
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    white = Image.new("RGB", (200, 200), (246, 246, 246))
    wbuf = io.BytesIO()
    white.save(wbuf, format="PNG")
    f, w = colour_features(buf.getvalue()), colour_features(wbuf.getvalue())
    assert np.argmax(f) == np.argmax(w) and f @ w > 0.7


def _flat(rgb, size=64):
    return Image.new("RGB", (size, size), rgb)


def test_greys_fall_in_lightness_bins_and_colours_outside_them():
    """Black, grey and white differ by lightness alone; a coloured item leaves the grey bins."""
    black, grey, white = (colour_features(_flat(c)) for c in ((25, 25, 27), (120, 120, 124), (240, 240, 238)))
    for f in (black, grey, white):
        assert f[:GREYS].sum() > 0.99 * f.sum()
    assert np.argmax(black[:GREYS]) < np.argmax(grey[:GREYS]) < np.argmax(white[:GREYS])
    red = colour_features(_flat((200, 35, 40)))
    assert red[:GREYS].sum() < 0.01 * red.sum()


def test_pink_and_red_are_told_apart_and_shading_keeps_a_colour_close():
    """Pink and red stay apart, and a darker fold of the red stays nearer to the red than to the
    pink (with hard HSV bins the fold shared no bin with either: cosine 0 to both)."""
    red, pink = colour_features(_flat((200, 35, 40))), colour_features(_flat((225, 60, 140)))
    assert red @ pink < 0.5
    shaded = colour_features(_flat((160, 28, 32)))  # the red at 0.8 of its light
    assert shaded @ red > shaded @ pink


def test_a_head_fitted_on_other_features_is_not_loaded(tmp_path):
    from ipl.index.category import save_head
    from ipl.index.colour import HEAD_FILE, LABELS_FILE

    old = {"classes": ["Black", "Red"], "weight": np.zeros((2, 108), np.float32), "bias": np.zeros(2, np.float32)}
    save_head(old, tmp_path, None, HEAD_FILE, LABELS_FILE, key="Color")  # no features tag: the HSV head
    assert ColourPredictor.load(tmp_path) is None
    new = {**old, "weight": np.zeros((2, FEATURE_DIM), np.float32)}
    save_colour_head(new, tmp_path, "Color")
    assert ColourPredictor.load(tmp_path).classes == ["Black", "Red"]
