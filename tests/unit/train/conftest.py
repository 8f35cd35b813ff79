"""Helpers of the training tests: instruction rows with real JPEG photos (tests/helpers/rows.py)."""
import pytest
from rows import instruction_row  # tests/helpers is on sys.path


@pytest.fixture
def make_row():
    return instruction_row
