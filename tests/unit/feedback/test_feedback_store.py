"""The feedback database (SQLite through SQLAlchemy here; the same code takes any URL) and the
adoption report's arithmetic."""
import pytest
from sqlalchemy import create_engine, text

from ipl.feedback.report import adoption_report, kept_share, normalised_edit, words
from ipl.feedback.store import MIGRATIONS, SCHEMA_VERSION, FeedbackStore, UnknownDraft, migrate


def url(tmp_path):
    return f"sqlite:///{tmp_path / 'fb' / 'feedback.db'}"


def test_records_survive_reopening_and_unknown_drafts_write_nothing(tmp_path):
    s = FeedbackStore(url(tmp_path))
    s.add_draft("a" * 32, "draft", "en", "phone", "Selling my blue phone.", [{"key": "Color", "value": "Blue",
                                                                             "status": "stated"}], "v0001")
    s.add_feedback("a" * 32, "published", "Selling my red phone.", {"Color": "Red"})
    with pytest.raises(UnknownDraft):
        s.add_feedback("b" * 32, "published", "x", {})
    s.close()
    again = FeedbackStore(url(tmp_path))
    rows = again.rows()
    assert [r["draft_id"] for r in rows] == ["a" * 32] and rows[0]["feedback"]["confirmed"] == {"Color": "Red"}
    with again.engine.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM feedback")).scalar() == 1
    assert again.migrated_from == SCHEMA_VERSION


def test_an_old_database_is_migrated_and_a_newer_one_refused(tmp_path):
    (tmp_path / "fb").mkdir()
    engine = create_engine(url(tmp_path))
    with engine.begin() as c:  # a database as version 1 left it
        c.execute(text("CREATE TABLE ipl_schema (version INTEGER NOT NULL)"))
        c.execute(text("INSERT INTO ipl_schema (version) VALUES (1)"))
        MIGRATIONS[1](c)
    assert migrate(engine) == 1
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM ipl_schema")).scalar() == SCHEMA_VERSION
        names = {r[0] for r in c.execute(text("SELECT name FROM sqlite_master WHERE type='index'"))}
    assert "ix_feedback_draft" in names
    with engine.begin() as c:
        c.execute(text("UPDATE ipl_schema SET version = 99"))
    with pytest.raises(RuntimeError, match="newer than this code"):
        FeedbackStore(url(tmp_path))


def test_word_overlap_and_edit_distance():
    assert words("Selling my iPhone 11, 白色!") == ["selling", "my", "iphone", "11", "白", "色"]
    assert kept_share("a b c d", "a b x y z") == 0.5
    assert kept_share("a a b", "a") == pytest.approx(1 / 3)
    assert normalised_edit("a b c d", "a b c d") == 0 and normalised_edit("a b", "c d") == 1.0
    assert normalised_edit("a b c d", "a b x d") == 0.25


def test_the_report_counts_adoption_and_edited_keys():
    def row(i, generated, outcome=None, published=None, confirmed=None, attrs=()):
        fb = None if outcome is None else {"outcome": outcome, "published_text": published,
                                           "confirmed": confirmed or {}}
        return {"draft_id": str(i), "description": generated, "attributes": list(attrs), "feedback": fb}

    stated = [{"key": "Color", "value": "Blue", "status": "stated"}, {"key": "Storage", "value": None,
                                                                      "status": "to_confirm"}]
    rows = [row(1, "selling my blue phone in good shape", "published", "selling my blue phone in good shape",
                {"Color": "Blue", "Storage": "64GB"}, stated),
            row(2, "selling my blue phone in good shape", "published", "red phone, barely used, pick up only",
                {"Color": "Red"}, stated),
            row(3, "a watch", "abandoned"),
            row(4, "a lamp")]
    r = adoption_report(rows)
    assert r["drafts"] == 4 and r["with_feedback"] == 3 and r["published"] == 2 and r["abandoned"] == 1
    assert r["published_share"] == 0.5 and r["kept_over_half_share"] == 0.5
    assert r["based_on_draft_share"] == 0.5  # the second kept 1 of 7 words (< 0.2)
    keys = {e["key"]: e for e in r["most_edited_keys"]}
    assert keys["Color"]["changed"] == 1 and keys["Storage"]["filled"] == 1
    assert r["edit_distance"]["n"] == 2 and r["edit_distance"]["p10"] == 0.0
    assert "no run directory" in r["quality_score"]["skipped"]


def test_published_drafts_are_scored_beside_the_cleaned_listings(tmp_path):
    import json as _json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ipl.catalog.templates import write_templates
    from ipl.data.listing_quality import QualityConfig, score_batch

    write_templates(tmp_path / "templates.yaml", {"phone": {"template": ["Brand", "Color", "Condition"],
                                                            "listings": 2}}, "test")
    cleaned = {"listing_id": np.array(["L1", "L2"], dtype=object), "category": np.array(["phone"] * 2, dtype=object),
               "description": np.array(["phone", "ok phone"], dtype=object),  # terse sellers, no attributes
               "extracted": np.array(["{}", _json.dumps({"Brand": "Huawei"})], dtype=object)}
    (tmp_path / "quality" / "scores").mkdir(parents=True)
    pq.write_table(pa.table(score_batch(cleaned, {"phone": ["Brand", "Color", "Condition"]},
                                        QualityConfig().model_dump())), tmp_path / "quality" / "scores" / "0.parquet")
    (tmp_path / "quality" / "summary.json").write_text(_json.dumps({"weights": QualityConfig().weights}))
    rows = [{"draft_id": "1", "category": "phone", "description": "Selling my blue Huawei phone, works well.",
             "attributes": [{"key": "Brand", "value": "Huawei", "status": "stated"},
                            {"key": "Color", "value": None, "status": "to_confirm"}],
             "feedback": {"outcome": "published", "published_text": "Selling my blue Huawei phone, works well, "
                          "barely used, with its case.", "confirmed": {"Color": "Blue", "Condition": "good"}}}]
    q = adoption_report(rows, tmp_path)["quality_score"]
    assert q["published_with_draft"]["n"] == 1 and q["cleaned_without_draft"]["n"] == 2
    assert q["published_with_draft"]["mean"] > q["cleaned_without_draft"]["mean"] and q["relative_gain"] > 0
    assert "photo_count" not in q["features"]  # not part of the feedback: not compared
    assert "run `ipl prepare`" in adoption_report(rows, tmp_path / "nowhere")["quality_score"]["skipped"]
