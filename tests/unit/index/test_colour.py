"""The photo-colour head: features describe the item's colour more than the background; the head
learns colours from labelled photos and round-trips through the index version directory."""
import io

import numpy as np
from PIL import Image, ImageDraw

from ipl.index.category import train_head
from ipl.index.colour import ColourPredictor, colour_features, photos_features, save_colour_head

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
    assert abs(float(np.linalg.norm(red)) - 1) < 1e-5 and red.shape == (108,)
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
